//! Job queue benchmark: enqueue rate, completed no-op jobs per second at concurrency 1, 8 and 32,
//! and pickup latency, each engine beside its own raw single-row INSERT rate measured in the
//! same run (absolute numbers drift on shared machines; the ratios are the figures that count).
//!
//!     cargo bench --bench queue                       # SQLite
//!     SWITCHYARD_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1/postgres cargo bench --bench queue
//!
//! With a PostgreSQL URL both engines run; a database is created for the run and dropped after.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use job_queue::{KindOptions, NewJob, Outcome, Queue, Worker, WorkerOptions};
use serde_json::json;
use switchyard::clock::Clock;
use switchyard::db::{Db, Dialect};
use tokio::sync::{mpsc, oneshot};

const INSERTS: usize = 2000;
const JOBS: usize = 2000;
const LATENCY_SAMPLES: usize = 200;

struct Engine {
    name: &'static str,
    url: String,
    cleanup: Option<(String, String)>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut engines = vec![Engine {
        name: "SQLite",
        url: format!("sqlite:{}", dir.path().join("bench.db").display()),
        cleanup: None,
    }];
    if let Ok(server) = std::env::var("SWITCHYARD_BENCH_DATABASE_URL") {
        let name = format!("sy_bench_{}", std::process::id());
        admin(&server, &format!("CREATE DATABASE {name}")).await;
        let mut url = url::Url::parse(&server).unwrap();
        url.set_path(&name);
        engines.push(Engine {
            name: "PostgreSQL",
            url: url.to_string(),
            cleanup: Some((server, name)),
        });
    }
    for engine in engines {
        run(&engine).await;
        if let Some((server, name)) = &engine.cleanup {
            admin(server, &format!("DROP DATABASE {name} WITH (FORCE)")).await;
        }
    }
}

async fn admin(server: &str, sql: &str) {
    use sqlx::Connection as _;
    let mut conn = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
}

async fn run(engine: &Engine) {
    let db = Db::connect(&engine.url, 40).await.unwrap();
    db.migrate().await.unwrap();
    let clock = Clock::default();
    let queue = Queue::new(
        db.writer().clone(),
        db.dialect().queue_engine(),
        Arc::new(move || clock.now_ms()),
    );
    println!("\n== {} ==", engine.name);

    let raw = raw_inserts(&db).await;
    println!("raw single-row INSERT     {raw:>9.0} rows/s   (reference)");

    let started = Instant::now();
    for n in 0..INSERTS {
        queue
            .enqueue(NewJob::new("enqueue.only", json!({ "n": n })))
            .await
            .unwrap();
    }
    let enqueue = INSERTS as f64 / started.elapsed().as_secs_f64();
    println!(
        "enqueue (own transaction) {enqueue:>9.0} jobs/s   {:>5.0}% of raw INSERT",
        100.0 * enqueue / raw
    );

    for concurrency in [1, 8, 32] {
        let rate = completed_per_second(&queue, &db, concurrency).await;
        println!(
            "completed no-op, c={concurrency:<2}     {rate:>9.0} jobs/s   {:>5.0}% of raw INSERT",
            100.0 * rate / raw
        );
    }

    let listen = (db.dialect() == Dialect::Postgres).then(|| engine.url.clone());
    let (p50, p99) = pickup_latency(&queue, &db, listen.clone(), true).await;
    println!("pickup latency, woken     p50 {p50:>6.2} ms  p99 {p99:>6.2} ms");
    if db.dialect() == Dialect::Sqlite {
        let (p50, p99) = pickup_latency(&queue, &db, None, false).await;
        println!("pickup latency, polling   p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  (another process enqueued; 50 ms poll)");
    }
    db.close().await;
}

async fn raw_inserts(db: &Db) -> f64 {
    sqlx::query("CREATE TABLE bench_raw (id TEXT PRIMARY KEY, payload TEXT NOT NULL, created_at BIGINT NOT NULL)")
        .execute(db.pool())
        .await
        .unwrap();
    let started = Instant::now();
    for n in 0..INSERTS {
        sqlx::query("INSERT INTO bench_raw (id, payload, created_at) VALUES ($1, $2, $3)")
            .bind(format!("raw_{}", ulid::Ulid::new()))
            .bind(json!({ "n": n }).to_string())
            .bind(n as i64)
            .execute(db.pool())
            .await
            .unwrap();
    }
    INSERTS as f64 / started.elapsed().as_secs_f64()
}

fn options(listen_url: Option<String>) -> WorkerOptions {
    WorkerOptions {
        listen_url,
        maintenance_interval: Duration::from_secs(60),
        ..WorkerOptions::default()
    }
}

async fn done(db: &Db, kind: &str) -> i64 {
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM jobs WHERE kind = $1 AND state = 'done'")
            .bind(kind)
            .fetch_one(db.pool())
            .await
            .unwrap();
    n
}

async fn completed_per_second(queue: &Queue, db: &Db, concurrency: usize) -> f64 {
    let kind = format!("noop.c{concurrency}");
    let mut tx = db.write_global().await.unwrap();
    for n in 0..JOBS {
        queue
            .enqueue_in(&mut tx, NewJob::new(&kind, json!({ "n": n })))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();

    let handled = Arc::new(AtomicUsize::new(0));
    let worker = Worker::new(queue.clone(), options(None)).register(
        &kind,
        KindOptions {
            concurrency,
            ..KindOptions::default()
        },
        {
            let handled = handled.clone();
            move |_job| {
                handled.fetch_add(1, Ordering::Relaxed);
                async { Outcome::Done }
            }
        },
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let started = Instant::now();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    while handled.load(Ordering::Relaxed) < JOBS {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    while done(db, &kind).await < JOBS as i64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = JOBS as f64 / started.elapsed().as_secs_f64();
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    rate
}

/// Milliseconds from an enqueue's commit to its handler starting, one job at a time.
async fn pickup_latency(
    queue: &Queue,
    db: &Db,
    listen_url: Option<String>,
    wake: bool,
) -> (f64, f64) {
    let kind = format!("latency.{}", if wake { "woken" } else { "polled" });
    let (started_tx, mut started_rx) = mpsc::unbounded_channel::<Instant>();
    let worker = Worker::new(queue.clone(), options(listen_url)).register(
        &kind,
        KindOptions::default(),
        move |_job| {
            let _ = started_tx.send(Instant::now());
            async { Outcome::Done }
        },
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for n in 0..LATENCY_SAMPLES {
        let mut tx = db.write_global().await.unwrap();
        queue
            .enqueue_in(&mut tx, NewJob::new(&kind, json!({ "n": n })))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let committed = Instant::now();
        if wake {
            queue.committed();
        }
        let handled = started_rx.recv().await.unwrap();
        samples.push(handled.duration_since(committed).as_secs_f64() * 1000.0);
        // Spread the enqueue moments across the 50 ms poll interval.
        tokio::time::sleep(Duration::from_millis((n as u64 * 7) % 53)).await;
    }
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.50), at(0.99))
}
