//! oras (the Python package): push an artifact with an artifact type,
//! attach a referrer to it, discover it through the referrers API, pull both.

use tcr_tests::harness::{node_with_namespace, run};

const SCRIPT: &str = r#"
import json, os, sys
import requests
import oras.client, oras.oci

host, work = sys.argv[1], sys.argv[2]
os.chdir(work)
client = oras.client.OrasClient(hostname=host, insecure=True)
repo = f"{host}/acme/artifacts"

with open("report.txt", "w") as f:
    f.write("the artifact body\n")
with open("config.json", "w") as f:
    f.write("{}")
client.push(target=f"{repo}:v1", files=["report.txt:text/plain"],
            manifest_config="config.json:application/vnd.example.report.v1+json")

head = requests.head(f"http://{host}/v2/acme/artifacts/manifests/v1",
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
subject_digest = head.headers["Docker-Content-Digest"]
subject = oras.oci.Subject(mediaType="application/vnd.oci.image.manifest.v1+json",
                           digest=subject_digest, size=int(head.headers["Content-Length"]))

with open("signature.txt", "w") as f:
    f.write("signed: " + subject_digest + "\n")
client.push(target=f"{repo}:sig", files=["signature.txt:text/plain"],
            manifest_config="config.json:application/vnd.example.signature.v1+json", subject=subject)

refs = requests.get(f"http://{host}/v2/acme/artifacts/referrers/{subject_digest}",
                    params={"artifactType": "application/vnd.example.signature.v1+json"}).json()
assert len(refs["manifests"]) == 1, refs
assert refs["manifests"][0]["artifactType"] == "application/vnd.example.signature.v1+json", refs
ref_digest = refs["manifests"][0]["digest"]

os.makedirs("out1"); os.makedirs("out2")
client.pull(target=f"{repo}:v1", outdir="out1")
client.pull(target=f"{repo}@{ref_digest}", outdir="out2")
assert open("out1/report.txt").read() == "the artifact body\n"
assert open("out2/signature.txt").read() == "signed: " + subject_digest + "\n"
print(json.dumps({"subject": subject_digest, "referrer": ref_digest}))
"#;

#[tokio::test]
async fn oras_artifact_with_a_referrer() {
    let dir = tempfile::tempdir().unwrap();
    let node = node_with_namespace(&dir.path().join("node")).await;
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let script = dir.path().join("oras_test.py");
    std::fs::write(&script, SCRIPT).unwrap();
    let out = run(
        "python3",
        &[
            script.to_str().unwrap(),
            &node.host(),
            work.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert!(v["subject"].as_str().unwrap().starts_with("sha256:"));
    assert_ne!(v["subject"], v["referrer"]);
}
