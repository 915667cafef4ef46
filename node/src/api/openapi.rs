//! The OpenAPI 3 document of the management API.

use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

pub fn spec() -> Value {
    let ns_param =
        json!({"name": "ns", "in": "path", "required": true, "schema": {"type": "string"}});
    let page_params = json!([
        {"name": "n", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}},
        {"name": "last", "in": "query", "required": false, "schema": {"type": "string"}}
    ]);
    json!({
        "openapi": "3.0.3",
        "info": {"title": "tcr management API", "version": env!("CARGO_PKG_VERSION")},
        "paths": {
            "/v1/container-registries/namespaces": {
                "get": {
                    "operationId": "listNamespaces",
                    "parameters": page_params,
                    "responses": {
                        "200": {"description": "namespaces in name order", "content": {"application/json": {"schema": {
                            "type": "object", "required": ["namespaces"],
                            "properties": {"namespaces": {"type": "array", "items": {"$ref": "#/components/schemas/Namespace"}}}}}}},
                        "400": error_response("bad pagination"),
                        "401": error_response("missing or wrong credentials")
                    }
                },
                "post": {
                    "operationId": "createNamespace",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CreateNamespace"}}}},
                    "responses": {
                        "201": {"description": "created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Namespace"}}}},
                        "400": error_response("invalid name or body"),
                        "401": error_response("missing or wrong credentials"),
                        "409": error_response("namespace exists")
                    }
                }
            },
            "/v1/container-registries/namespaces/{ns}": {
                "get": {
                    "operationId": "getNamespace",
                    "parameters": [ns_param],
                    "responses": {
                        "200": {"description": "the namespace", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Namespace"}}}},
                        "401": error_response("missing or wrong credentials"),
                        "404": error_response("no such namespace")
                    }
                },
                "patch": {
                    "operationId": "updateNamespace",
                    "parameters": [ns_param],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["visibility"], "additionalProperties": false,
                        "properties": {"visibility": {"$ref": "#/components/schemas/Visibility"}}}}}},
                    "responses": {
                        "200": {"description": "updated", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Namespace"}}}},
                        "400": error_response("invalid body"),
                        "401": error_response("missing or wrong credentials"),
                        "404": error_response("no such namespace")
                    }
                }
            },
            "/v1/container-registries/cluster": {
                "get": {
                    "operationId": "clusterStatus",
                    "responses": {
                        "200": {"description": "this node's view of the cluster", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ClusterStatus"}}}},
                        "401": error_response("missing or wrong credentials")
                    }
                }
            },
            "/v1/container-registries/cluster/members": {
                "post": {
                    "operationId": "addMember",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["id", "rpcAddr", "httpAddr"], "additionalProperties": false,
                        "properties": {"id": {"type": "integer", "minimum": 1}, "rpcAddr": {"type": "string"}, "httpAddr": {"type": "string"},
                            "weight": {"type": "integer", "minimum": 0, "description": "blob placement weight (relative capacity), 100 by default; 0 owns nothing"}}}}}},
                    "responses": {
                        "200": {"description": "the node is a voter", "content": {"application/json": {"schema": {"type": "object"}}}},
                        "307": {"description": "not the leader; Location names the leader"},
                        "400": error_response("invalid body"),
                        "401": error_response("missing or wrong credentials"),
                        "409": error_response("the membership change failed"),
                        "503": error_response("no leader")
                    }
                }
            },
            "/v1/container-registries/cluster/members/{id}": {
                "delete": {
                    "operationId": "removeMember",
                    "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0}}],
                    "responses": {
                        "200": {"description": "removed", "content": {"application/json": {"schema": {"type": "object"}}}},
                        "307": {"description": "not the leader; Location names the leader"},
                        "400": error_response("the last voter cannot be removed"),
                        "401": error_response("missing or wrong credentials"),
                        "404": error_response("not a member"),
                        "409": error_response("the membership change failed"),
                        "503": error_response("no leader")
                    }
                }
            },
            "/v1/container-registries/storage": {
                "get": {
                    "operationId": "storageStatus",
                    "description": "This node's storage loop: blobs owned and held (bytes), missing (under-replicated), misplaced (held without owning, waiting for the owners), pulled, dropped, scrubbed bytes and corrupt copies found in the last pass.",
                    "responses": {
                        "200": {"description": "the last pass on this node", "content": {"application/json": {"schema": {"type": "object"}}}},
                        "401": error_response("missing or wrong credentials")
                    }
                }
            },
            "/v1/container-registries/storage/passes": {
                "post": {
                    "operationId": "storagePass",
                    "description": "Start a storage pass (repair, rebalance, scrub) on this node now.",
                    "responses": {
                        "202": {"description": "started", "content": {"application/json": {"schema": {"type": "object"}}}},
                        "401": error_response("missing or wrong credentials")
                    }
                }
            },
            "/v1/container-registries/storage/blobs/{digest}": {
                "get": {
                    "operationId": "blobPlacement",
                    "parameters": [{"name": "digest", "in": "path", "required": true, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "the blob's owners (best first) and whether this node holds a copy", "content": {"application/json": {"schema": {"type": "object", "properties": {
                            "digest": {"type": "string"}, "committed": {"type": "boolean"}, "size": {"type": "integer"},
                            "owners": {"type": "array", "items": {"type": "integer"}}, "heldHere": {"type": "boolean"}}}}}},
                        "400": error_response("malformed digest"),
                        "401": error_response("missing or wrong credentials")
                    }
                }
            },
            "/v1/container-registries/cluster/settings": {
                "patch": {
                    "operationId": "updateClusterSettings",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "object", "additionalProperties": false,
                        "properties": {"replicationFactor": {"type": "integer", "minimum": 1, "description": "copies of each blob; at most the number of voters"}}}}}},
                    "responses": {
                        "200": {"description": "the settings in effect", "content": {"application/json": {"schema": {"type": "object", "properties": {
                            "replicationFactor": {"type": "integer"}, "replicationFactorSet": {"type": "boolean"}, "writeQuorum": {"type": "integer"}}}}}},
                        "400": error_response("invalid value (for example more copies than voters)"),
                        "401": error_response("missing or wrong credentials"),
                        "503": error_response("no leader")
                    }
                }
            },
            "/v1/container-registries/cluster/leader/transfer": {
                "post": {
                    "operationId": "transferLeader",
                    "description": "Make another voter the leader; writes pause for about one election timeout.",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["to"], "additionalProperties": false,
                        "properties": {"to": {"type": "integer", "minimum": 1}}}}}},
                    "responses": {
                        "200": {"description": "the node leads", "content": {"application/json": {"schema": {"type": "object", "properties": {"leader": {"type": "integer"}, "term": {"type": "integer"}}}}}},
                        "307": {"description": "not the leader; Location names the leader"},
                        "400": error_response("invalid body"),
                        "401": error_response("missing or wrong credentials"),
                        "404": error_response("not a voter"),
                        "409": error_response("the transfer failed"),
                        "503": error_response("no leader")
                    }
                }
            },
            "/v1/container-registries/namespaces/{ns}/repositories": {
                "get": {
                    "operationId": "listRepositories",
                    "parameters": [ns_param, page_params[0], page_params[1]],
                    "responses": {
                        "200": {"description": "repositories in name order", "content": {"application/json": {"schema": {
                            "type": "object", "required": ["repositories", "more"],
                            "properties": {
                                "repositories": {"type": "array", "items": {"$ref": "#/components/schemas/Repository"}},
                                "more": {"type": "boolean"}}}}}},
                        "400": error_response("bad pagination"),
                        "401": error_response("missing or wrong credentials"),
                        "404": error_response("no such namespace")
                    }
                }
            }
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Visibility": {"type": "string", "enum": ["public", "private"]},
                "CreateNamespace": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                    "name": {"type": "string", "pattern": "^[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*$", "maxLength": 64},
                    "visibility": {"$ref": "#/components/schemas/Visibility"}}},
                "Namespace": {"type": "object", "required": ["name", "visibility", "createdAt"], "properties": {
                    "name": {"type": "string"},
                    "visibility": {"$ref": "#/components/schemas/Visibility"},
                    "createdAt": {"type": "integer", "description": "seconds since the Unix epoch"}}},
                "ClusterStatus": {"type": "object", "required": ["nodeId", "term", "members", "stateDigest"], "properties": {
                    "nodeId": {"type": "integer"}, "state": {"type": "string"},
                    "leader": {"type": "integer", "nullable": true}, "term": {"type": "integer"},
                    "lastLogIndex": {"type": "integer", "nullable": true}, "appliedIndex": {"type": "integer", "nullable": true},
                    "snapshotIndex": {"type": "integer", "nullable": true}, "stateDigest": {"type": "string"},
                    "members": {"type": "array", "items": {"type": "object"}}}},
                "Repository": {"type": "object", "required": ["name", "createdAt"], "properties": {
                    "name": {"type": "string"}, "createdAt": {"type": "integer"}}},
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                    "type": "object", "required": ["code", "message"],
                    "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
            }
        },
        "security": [{"bearer": []}]
    })
}

pub async fn document() -> impl IntoResponse {
    Json(spec())
}
