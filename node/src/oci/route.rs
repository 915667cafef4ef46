//! Splitting `/v2/...` paths into OCI resources. Repository names contain
//! `/`, so the resource is found from the end of the path.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags { name: String },
    Manifest { name: String, reference: String },
    Blob { name: String, digest: String },
    UploadStart { name: String },
    Upload { name: String, id: String },
    Referrers { name: String, digest: String },
}

/// `path` is the request path; `None` when it names no OCI resource.
pub fn parse(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let owned = |s: &str| s.to_string();
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags { name: owned(name) });
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::UploadStart { name: owned(name) });
    }
    let (head, last) = rest.rsplit_once('/')?;
    if last.is_empty() {
        return None;
    }
    if let Some(name) = head.strip_suffix("/blobs/uploads") {
        return Some(Route::Upload {
            name: owned(name),
            id: owned(last),
        });
    }
    let (name, kind) = head.rsplit_once('/')?;
    match kind {
        "manifests" => Some(Route::Manifest {
            name: owned(name),
            reference: owned(last),
        }),
        "blobs" => Some(Route::Blob {
            name: owned(name),
            digest: owned(last),
        }),
        "referrers" => Some(Route::Referrers {
            name: owned(name),
            digest: owned(last),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn resources() {
        assert_eq!(parse("/v2/"), Some(Route::Base));
        assert_eq!(parse("/v2"), Some(Route::Base));
        assert_eq!(parse("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            parse("/v2/a/b/tags/list"),
            Some(Route::Tags { name: "a/b".into() })
        );
        assert_eq!(
            parse("/v2/a/manifests/manifests/latest"),
            Some(Route::Manifest {
                name: "a/manifests".into(),
                reference: "latest".into()
            })
        );
        assert_eq!(
            parse("/v2/a/b/blobs/uploads/"),
            Some(Route::UploadStart { name: "a/b".into() })
        );
        assert_eq!(
            parse("/v2/a/b/blobs/uploads/1-abc"),
            Some(Route::Upload {
                name: "a/b".into(),
                id: "1-abc".into()
            })
        );
        assert_eq!(
            parse("/v2/a/blobs/sha256:00"),
            Some(Route::Blob {
                name: "a".into(),
                digest: "sha256:00".into()
            })
        );
        assert_eq!(
            parse("/v2/a/b/referrers/sha256:00"),
            Some(Route::Referrers {
                name: "a/b".into(),
                digest: "sha256:00".into()
            })
        );
        assert_eq!(parse("/v2/a/b/other/x"), None);
        assert_eq!(parse("/v3/a/b/manifests/x"), None);
    }

    proptest! {
        #[test]
        fn manifest_paths_round_trip(
            name in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}",
            reference in "[A-Za-z0-9_][A-Za-z0-9._-]{0,20}",
        ) {
            let path = format!("/v2/{name}/manifests/{reference}");
            prop_assert_eq!(parse(&path), Some(Route::Manifest { name, reference }));
        }

        #[test]
        fn arbitrary_paths_never_panic(p in "/v2\\PC{0,200}") {
            let _ = parse(&p);
        }
    }
}
