//! Smoke test of the S3 server with a real S3 client (object_store).

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use tests_integration::{s3, unique};

#[tokio::test]
async fn put_list_get() {
    let cfg = s3();
    let store = AmazonS3Builder::new()
        .with_endpoint(&cfg.endpoint)
        .with_allow_http(true)
        .with_region(&cfg.region)
        .with_bucket_name(&cfg.bucket)
        .with_access_key_id(&cfg.access_key_id)
        .with_secret_access_key(&cfg.secret_access_key)
        .build()
        .expect("S3 client");
    let prefix = unique("smoke");
    for i in 0..3 {
        let path = Path::from(format!("{prefix}/part-{i}.jsonl"));
        store
            .put(&path, PutPayload::from(format!("{{\"n\":{i}}}\n")))
            .await
            .expect("put");
    }
    let listed: Vec<String> = store
        .list(Some(&Path::from(prefix.clone())))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .expect("list");
    assert_eq!(listed.len(), 3, "{listed:?}");
    let body = store
        .get(&Path::from(format!("{prefix}/part-1.jsonl")))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("body");
    assert_eq!(&body[..], b"{\"n\":1}\n");
}
