//! Seeded random workloads over the two source tables: inserts, updates of every column (group
//! keys, primary key, NULL to value and back, in and out of the date windows), deletes,
//! multi-statement and rolled-back transactions, and the occasional TRUNCATE.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const STATUSES: [&str; 4] = ["running", "completed", "failed", "cancelled"];

/// Fixed ids for tests that write rows by hand: an agent, two workspaces and a user.
pub const A1: &str = "11111111-1111-4111-a111-111111111111";
pub const W1: &str = "22222222-2222-4222-a222-222222222222";
pub const W2: &str = "33333333-3333-4333-a333-333333333333";
pub const U1: &str = "44444444-4444-4444-a444-444444444444";

/// One agent run by `agent` in `ws` (user [`U1`]), started at `at`.
pub fn run_row(agent: &str, ws: &str, status: &str, at: &str) -> String {
    format!(
        "INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, runtime_seconds, credits_consumed)
         VALUES ('{agent}', '{ws}', '{U1}', '{status}', '{at}', 12.5, 1.2500);"
    )
}
const ACTIVITIES: [&str; 3] = ["login", "chat", "deploy"];

pub struct Workload {
    rng: SmallRng,
    /// (agent_id, workspace_id): every agent belongs to one workspace.
    agents: Vec<(String, String)>,
    workspaces: Vec<String>,
    users: Vec<String>,
    /// The engine's "now" in microseconds since 1970 (UTC).
    now_micros: i64,
    /// Highest id that may exist in each table.
    max_run_id: i64,
    max_activity_id: i64,
    pub allow_truncate: bool,
}

/// A random version-4 UUID in text form.
pub fn uuid(rng: &mut SmallRng) -> String {
    let b: [u8; 16] = rng.gen();
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0xfff,
        u16::from_be_bytes([b[8], b[9]]) & 0xfff,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

impl Workload {
    pub fn new(seed: u64, now_micros: i64) -> Workload {
        let mut rng = SmallRng::seed_from_u64(seed);
        let workspaces: Vec<String> = (0..4).map(|_| uuid(&mut rng)).collect();
        let agents = (0..48)
            .map(|i| (uuid(&mut rng), workspaces[i % workspaces.len()].clone()))
            .collect();
        let users = (0..15).map(|_| uuid(&mut rng)).collect();
        Workload {
            rng,
            agents,
            workspaces,
            users,
            now_micros,
            max_run_id: 0,
            max_activity_id: 0,
            allow_truncate: true,
        }
    }

    pub fn set_now(&mut self, now_micros: i64) {
        self.now_micros = now_micros;
    }

    /// A timestamp literal between 100 days ago and 2 days ahead, biased to whole-day boundaries
    /// so window edges are exercised.
    fn ts(&mut self) -> String {
        let day = 86_400_000_000i64;
        let micros = if self.rng.gen_bool(0.3) {
            let days: i64 = *[7i64, 30, 90, 8, 31, 91, 0, 1]
                .get(self.rng.gen_range(0..8))
                .unwrap_or(&7);
            self.now_micros - days * day
                + self
                    .rng
                    .gen_range(-2 * 3_600_000_000i64..2 * 3_600_000_000i64)
        } else {
            self.now_micros - self.rng.gen_range(-2 * day..100 * day)
        };
        let secs = micros.div_euclid(1_000_000);
        let sub = micros.rem_euclid(1_000_000);
        let dt = chrono::DateTime::from_timestamp(secs, (sub * 1000) as u32).unwrap_or_default();
        format!("'{}'::timestamptz", dt.format("%Y-%m-%d %H:%M:%S%.6f+00"))
    }

    fn runtime(&mut self) -> String {
        if self.rng.gen_bool(0.1) {
            "NULL".into()
        } else {
            format!("{}", self.rng.gen_range(0.0..600.0f64))
        }
    }

    fn credits(&mut self) -> String {
        if self.rng.gen_bool(0.1) {
            "NULL".into()
        } else {
            format!(
                "{}.{:04}",
                self.rng.gen_range(0..500),
                self.rng.gen_range(0..10000)
            )
        }
    }

    fn pick<'a>(&mut self, items: &'a [String]) -> &'a str {
        &items[self.rng.gen_range(0..items.len())]
    }

    fn insert_runs(&mut self, n: usize) -> String {
        let mut rows = Vec::new();
        for _ in 0..n {
            let (agent, ws) = self.agents[self.rng.gen_range(0..self.agents.len())].clone();
            let users = self.users.clone();
            let user = self.pick(&users).to_string();
            let status = STATUSES[self.rng.gen_range(0..4)];
            let err = if status == "failed" {
                format!("'E{}'", self.rng.gen_range(1..4))
            } else {
                "NULL".into()
            };
            let (ts, rt, cr) = (self.ts(), self.runtime(), self.credits());
            rows.push(format!(
                "('{agent}', '{ws}', '{user}', '{status}', {ts}, {rt}, {cr}, {err})"
            ));
        }
        self.max_run_id += n as i64;
        format!(
            "INSERT INTO public.agent_runs (agent_id, workspace_id, user_id, status, started_at, runtime_seconds, credits_consumed, error_code) VALUES {};",
            rows.join(", ")
        )
    }

    fn insert_activity(&mut self, n: usize) -> String {
        let mut rows = Vec::new();
        for _ in 0..n {
            let (ws, users) = (self.workspaces.clone(), self.users.clone());
            let (w, u) = (self.pick(&ws).to_string(), self.pick(&users).to_string());
            let kind = ACTIVITIES[self.rng.gen_range(0..3)];
            let ts = self.ts();
            rows.push(format!("('{w}', '{u}', '{kind}', {ts})"));
        }
        self.max_activity_id += n as i64;
        format!(
            "INSERT INTO analytics.user_activity (workspace_id, user_id, activity_type, created_at) VALUES {};",
            rows.join(", ")
        )
    }

    fn run_id(&mut self) -> i64 {
        self.rng.gen_range(1..=self.max_run_id.max(1))
    }

    fn activity_id(&mut self) -> i64 {
        self.rng.gen_range(1..=self.max_activity_id.max(1))
    }

    fn update_run(&mut self) -> String {
        let id = self.run_id();
        let set = match self.rng.gen_range(0..8) {
            0 => format!("status = '{}'", STATUSES[self.rng.gen_range(0..4)]),
            1 => format!("runtime_seconds = {}", self.runtime()),
            2 => format!("credits_consumed = {}", self.credits()),
            3 => format!("started_at = {}", self.ts()),
            4 => {
                let (a, w) = self.agents[self.rng.gen_range(0..self.agents.len())].clone();
                format!("agent_id = '{a}', workspace_id = '{w}'")
            }
            5 => {
                let users = self.users.clone();
                format!("user_id = '{}'", self.pick(&users))
            }
            6 => "id = id + 1000000".to_string(),
            _ => format!(
                "started_at = started_at + interval '{} hours', runtime_seconds = NULL",
                self.rng.gen_range(-30..30)
            ),
        };
        format!("UPDATE public.agent_runs SET {set} WHERE id = {id};")
    }

    fn update_activity(&mut self) -> String {
        let id = self.activity_id();
        let set = match self.rng.gen_range(0..4) {
            0 => format!("created_at = {}", self.ts()),
            1 => {
                let ws = self.workspaces.clone();
                format!("workspace_id = '{}'", self.pick(&ws))
            }
            2 => {
                let users = self.users.clone();
                format!("user_id = '{}'", self.pick(&users))
            }
            _ => "id = id + 1000000".to_string(),
        };
        format!("UPDATE analytics.user_activity SET {set} WHERE id = {id};")
    }

    /// One transaction as SQL text (committed or rolled back).
    pub fn transaction(&mut self) -> String {
        let mut stmts = vec!["BEGIN;".to_string()];
        for _ in 0..self.rng.gen_range(1..5) {
            let s = match self.rng.gen_range(0..100) {
                0..=24 => {
                    let n = self.rng.gen_range(1..6);
                    self.insert_runs(n)
                }
                25..=44 => {
                    let n = self.rng.gen_range(1..6);
                    self.insert_activity(n)
                }
                45..=64 => self.update_run(),
                65..=79 => self.update_activity(),
                80..=88 => format!(
                    "DELETE FROM public.agent_runs WHERE id = {};",
                    self.run_id()
                ),
                89..=96 => format!(
                    "DELETE FROM analytics.user_activity WHERE id = {};",
                    self.activity_id()
                ),
                97 => format!(
                    "DELETE FROM public.agent_runs WHERE id % 23 = {};",
                    self.rng.gen_range(0..23)
                ),
                98 if self.allow_truncate && self.rng.gen_bool(0.2) => {
                    "TRUNCATE analytics.user_activity;".to_string()
                }
                _ => self.update_run(),
            };
            stmts.push(s);
        }
        stmts.push(
            if self.rng.gen_bool(0.1) {
                "ROLLBACK;"
            } else {
                "COMMIT;"
            }
            .to_string(),
        );
        stmts.join("\n")
    }

    /// Initial data: `n` rows in each table.
    pub fn seed_rows(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut left = n;
        while left > 0 {
            let k = left.min(500);
            out.push(self.insert_runs(k));
            out.push(self.insert_activity(k));
            left -= k;
        }
        out
    }
}
