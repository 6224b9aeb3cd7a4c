//! Rotation under load: a writer thread appends numbered lines while the file
//! is rotated, and the reader is restarted in the middle.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use velo_file as _;

/// How the writer rotates.
#[derive(Clone, Copy)]
enum Rotation {
    /// `mv app.log app.log.N` then a new `app.log` (logrotate's default).
    RenameCreate,
    /// `cp app.log app.log.N` then truncate `app.log` (logrotate's copytruncate).
    CopyTruncate,
}

/// Writes `total` lines `{"n":i}`, rotating `rotations` times evenly.
fn writer(
    path: PathBuf,
    total: u64,
    rotations: u64,
    how: Rotation,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let per = total / (rotations + 1);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        let mut rotated = 0;
        for n in 0..total {
            writeln!(f, "{{\"n\":{n}}}").unwrap();
            if n % 25 == 0 {
                f.flush().unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
            if (n + 1) % per == 0 && rotated < rotations {
                rotated += 1;
                let to = path.with_file_name(format!("app.log.{rotated}"));
                match how {
                    Rotation::RenameCreate => {
                        std::fs::rename(&path, &to).unwrap();
                        f = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&path)
                            .unwrap();
                    }
                    Rotation::CopyTruncate => {
                        std::fs::copy(&path, &to).unwrap();
                        f.set_len(0).unwrap();
                    }
                }
            }
        }
        done.store(true, Ordering::SeqCst);
        rotated
    })
}

/// Asserts `ns` is `0..total` exactly, with a short report when it is not.
fn assert_exact_sequence(ns: &[i64], total: i64) {
    let mut seen = vec![0u32; total as usize];
    for &n in ns {
        seen[n as usize] += 1;
    }
    let missing: Vec<i64> = (0..total).filter(|&n| seen[n as usize] == 0).collect();
    let twice: Vec<i64> = (0..total).filter(|&n| seen[n as usize] > 1).collect();
    let disorder = ns.windows(2).position(|w| w[1] != w[0] + 1);
    assert!(
        missing.is_empty() && twice.is_empty() && disorder.is_none(),
        "{} missing (first {:?}), {} twice (first {:?}), first disorder at index {:?}: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)],
        twice.len(),
        &twice[..twice.len().min(5)],
        disorder,
        disorder.map(|i| &ns[i.saturating_sub(2)..(i + 3).min(ns.len())])
    );
}

fn uri_for(path: &Path) -> String {
    uri(
        path,
        "format=jsonl&mode=tail&read_timeout=100ms&poll_interval=20ms&rotation_pattern=app.log.*",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_create_twenty_times_with_a_restart_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    std::fs::write(&path, "").unwrap();
    let total = 20_000;
    let done = Arc::new(AtomicBool::new(false));
    let src = source(&uri_for(&path)).await.unwrap();
    let mut r = src.create_reader().await.unwrap();
    let w = writer(
        path.clone(),
        total,
        20,
        Rotation::RenameCreate,
        done.clone(),
    );

    let mut got = Vec::new();
    read_until(r.as_mut(), &mut got, Duration::from_secs(60), |g| {
        g.len() as u64 >= total / 2
    })
    .await
    .unwrap();
    // Restart in the middle, from the reader's position, while the writer goes on.
    let position = r.position().unwrap();
    drop(r);
    let mut r = src.create_reader().await.unwrap();
    r.restore(position).await.unwrap();
    let complete = read_until(r.as_mut(), &mut got, Duration::from_secs(60), |g| {
        g.len() as u64 >= total
    })
    .await
    .unwrap();
    assert_eq!(w.join().unwrap(), 20);
    assert!(complete, "got {} of {total}", got.len());
    // A little more reading must not bring anything twice.
    got.extend(r.read_batch(1000).await.unwrap());
    let ns = ints(&got, "n");
    assert_exact_sequence(&ns, total as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copytruncate_never_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    std::fs::write(&path, "").unwrap();
    let total = 10_000;
    let done = Arc::new(AtomicBool::new(false));
    let mut r = source(&uri_for(&path))
        .await
        .unwrap()
        .create_reader()
        .await
        .unwrap();
    let w = writer(
        path.clone(),
        total,
        10,
        Rotation::CopyTruncate,
        done.clone(),
    );
    let mut got = Vec::new();
    while !done.load(Ordering::SeqCst) {
        got.extend(r.read_batch(1000).await.unwrap());
    }
    w.join().unwrap();
    // Drain what is left.
    for _ in 0..20 {
        got.extend(r.read_batch(1000).await.unwrap());
    }
    let ns = ints(&got, "n");
    let mut sorted = ns.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), ns.len(), "no line twice");
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "in order");
    let lost = total as usize - ns.len();
    // copytruncate loses what is written between the copy and the truncate;
    // the reader must not lose more than a small window per rotation.
    eprintln!(
        "copytruncate: {} of {total} lines read, {lost} lost over 10 rotations",
        ns.len()
    );
    assert!(lost <= 10 * 100, "lost {lost}");
    assert_eq!(
        *ns.last().unwrap(),
        total as i64 - 1,
        "the lines after the last rotation arrive"
    );
}
