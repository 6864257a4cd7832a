//! Integration tests run on SQLite always and, when `SWITCHYARD_TEST_DATABASE_URL` names a
//! PostgreSQL server, on PostgreSQL too. The `switchyard_pg_tests` cfg switches the PostgreSQL
//! variants from ignored (reported as skipped, with the reason) to run.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(switchyard_pg_tests)");
    println!("cargo::rerun-if-env-changed=SWITCHYARD_TEST_DATABASE_URL");
    println!("cargo::rerun-if-changed=build.rs");
    // `sqlx::migrate!` embeds the migration files; a proc macro cannot watch a directory.
    println!("cargo::rerun-if-changed=migrations");
    if std::env::var("SWITCHYARD_TEST_DATABASE_URL").is_ok_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=switchyard_pg_tests");
    }
}
