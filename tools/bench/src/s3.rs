//! S3: velo's object-store source (records decoded) next to boto3
//! downloading the same objects one after another, against the same server.

use std::process::Command;
use std::time::Instant;

use velo_datasource_core::{DataSource, DataSourceUri};
use velo_s3::S3Source;

use crate::{Measure, added_peak_rss, measure_rss};

fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} (set by cargo xtask bench)"))
}

fn boto3(script: &str) -> String {
    let prelude = format!(
        "import boto3, time\ns3 = boto3.client('s3', endpoint_url='{}', region_name='{}', aws_access_key_id='{}', \
         aws_secret_access_key='{}')\nbucket = '{}'\n",
        env("VELO_TEST_S3_ENDPOINT"),
        env("VELO_TEST_S3_REGION"),
        env("VELO_TEST_S3_ACCESS_KEY_ID"),
        env("VELO_TEST_S3_SECRET_ACCESS_KEY"),
        env("VELO_TEST_S3_BUCKET")
    );
    let out = Command::new(env("VELO_TEST_S3_PYTHON"))
        .args(["-c", &format!("{prelude}{script}")])
        .output()
        .expect("python with boto3");
    assert!(
        out.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Returns (velo source, sequential boto3) over `objects` JSONL objects of ~200 KB.
pub(crate) fn run(rt: &tokio::runtime::Runtime, objects: usize, reps: usize) -> (Measure, Measure) {
    let prefix = format!("bench-{}", std::process::id());
    let total: f64 = boto3(&format!(
        "body = ''.join('{{\"id\": %d, \"symbol\": \"AAPL\", \"price\": 123.45, \"note\": \"%s\"}}\\n' % (i, 'x' * 40) \
         for i in range(2000)).encode()\n\
         for o in range({objects}):\n    s3.put_object(Bucket=bucket, Key='{prefix}/obj-%05d.jsonl' % o, Body=body)\n\
         print(len(body) * {objects})"
    ))
    .parse()
    .expect("byte count");
    let uri = format!(
        "s3://{}/{prefix}?endpoint={}&region={}&access_key_id={}&secret_access_key={}&format=jsonl&until=end\
         &max_keys_per_scan=100000&parallel_downloads=8",
        env("VELO_TEST_S3_BUCKET"),
        env("VELO_TEST_S3_ENDPOINT"),
        env("VELO_TEST_S3_REGION"),
        env("VELO_TEST_S3_ACCESS_KEY_ID"),
        env("VELO_TEST_S3_SECRET_ACCESS_KEY"),
    );
    let mut ours = Vec::new();
    let mut bare = Vec::new();
    let (mut ours_rss, mut bare_rss) = (0f64, 0f64);
    for _ in 0..reps {
        let t = Instant::now();
        let (records, rss) = added_peak_rss(|| {
            rt.block_on(async {
                let mut source = S3Source::new();
                source
                    .initialize(
                        DataSourceUri::parse(&uri)
                            .unwrap()
                            .to_source_config()
                            .unwrap(),
                    )
                    .await
                    .unwrap();
                let mut reader = source.create_reader().await.unwrap();
                let mut n = 0;
                while reader.has_more().await.unwrap() {
                    n += reader.read_batch(10_000).await.unwrap().len();
                }
                n
            })
        });
        ours.push(t.elapsed().as_secs_f64());
        ours_rss = ours_rss.max(rss);
        assert_eq!(records, objects * 2000, "velo read every record");
        // boto3 times itself, from listing to the last byte, and reports the
        // memory its process added meanwhile (ru_maxrss, KiB, against VmRSS before).
        let out = boto3(&format!(
            "import resource\nbefore = int([l for l in open('/proc/self/status') if l.startswith('VmRSS:')][0].split()[1])\n\
             t = time.time()\nn = 0\nfor page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix='{prefix}/'):\n    \
             for o in page.get('Contents', []):\n        n += len(s3.get_object(Bucket=bucket, Key=o['Key'])['Body'].read())\n\
             print(time.time() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)"
        ));
        let (seconds, added_kib) = out.split_once(' ').expect("seconds and KiB");
        bare.push(seconds.parse().expect("seconds"));
        bare_rss = bare_rss.max(added_kib.trim().parse::<f64>().expect("KiB") / 1024.0);
    }
    boto3(&format!(
        "for page in s3.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix='{prefix}/'):\n    \
         for o in page.get('Contents', []):\n        s3.delete_object(Bucket=bucket, Key=o['Key'])"
    ));
    (
        measure_rss("velo S3 source (records)", "B", ((ours, total), ours_rss)),
        measure_rss("boto3 sequential download", "B", ((bare, total), bare_rss)),
    )
}
