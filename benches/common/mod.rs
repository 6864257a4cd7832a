//! What the benchmarks share.

#![allow(dead_code)]

pub mod program;

/// CPU time used so far, in clock ticks (1/100 s), from `/proc/<pid>/stat` (Linux). These
/// per-process counters come from the scheduler's exact run times; the machine-wide ones in
/// `/proc/stat` are sampled at each tick, which a load paced by timers can dodge.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ticks {
    /// This process: the servers and whatever else the benchmark runs in-process.
    pub own: u64,
    /// This process's children that have exited and been waited for (a finished `wrk`).
    pub children: u64,
    /// Every PostgreSQL process, with the backends that have exited (the postmaster's children).
    pub postgres: u64,
}

impl Ticks {
    pub fn now() -> Option<Ticks> {
        let me = std::process::id().to_string();
        let mut ticks = Ticks::default();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let pid = entry.file_name();
            let Some(pid) = pid
                .to_str()
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            let postgres = comm.trim_end() == "postgres";
            if pid != me && !postgres {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue; // It exited.
            };
            // After the command's closing parenthesis, from the state on: utime, stime,
            // cutime and cstime are the 12th to 15th fields.
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let field = |n: usize| fields.get(n).and_then(|f| f.parse::<u64>().ok());
            let (run, reaped) = (field(11)? + field(12)?, field(13)? + field(14)?);
            if postgres {
                ticks.postgres += run + reaped;
            } else {
                ticks.own += run;
                ticks.children += reaped;
            }
        }
        Some(ticks)
    }

    /// What was used since `earlier`.
    pub fn since(self, earlier: Ticks) -> Ticks {
        Ticks {
            own: self.own - earlier.own,
            children: self.children - earlier.children,
            postgres: self.postgres - earlier.postgres,
        }
    }
}

/// Clock ticks in milliseconds (Linux counts 100 per second).
pub fn millis(ticks: u64) -> f64 {
    ticks as f64 * 10.0
}
