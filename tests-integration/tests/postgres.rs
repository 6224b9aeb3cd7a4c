//! Smoke test of PostgreSQL with its own client (psql): logical replication works.

use tests_integration::unique;

fn psql(sql: &str) -> String {
    tests_integration::psql(sql).trim().to_owned()
}

#[test]
fn logical_replication_slot_sees_a_change() {
    assert_eq!(psql("SHOW wal_level"), "logical");
    let table = unique("smoke").replace('-', "_");
    let slot = format!("{table}_slot");
    psql(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, name text)"
    ));
    psql(&format!(
        "SELECT 'ok' FROM pg_create_logical_replication_slot('{slot}', 'test_decoding')"
    ));
    psql(&format!("INSERT INTO {table} VALUES (1, 'alice')"));
    let changes = psql(&format!(
        "SELECT data FROM pg_logical_slot_get_changes('{slot}', NULL, NULL)"
    ));
    psql(&format!("SELECT pg_drop_replication_slot('{slot}')"));
    psql(&format!("DROP TABLE {table}"));
    assert!(
        changes.contains(&format!(
            "table public.{table}: INSERT: id[integer]:1 name[text]:'alice'"
        )),
        "{changes}"
    );
}
