//! Per-view settings: `deltamv.toml` next to the view files, with defaults.
//!
//! ```toml
//! [defaults]
//! min_interval_ms = 5000        # fallback views: at most one refresh per interval after changes
//! freshness_target_s = 60       # how stale a view may be before status calls it stale
//!
//! require_incremental = true    # `init` fails on a view the planner cannot maintain instead of
//!                               # keeping it as a refreshed materialized view (default false;
//!                               # `deltamv init --require-incremental` sets it for every view)
//!
//! [views."analytics.mv_workspace_names"]
//! mode = "fallback"             # "auto" (incremental when the planner can, else fallback)
//! schedule = "every 10m"        # or a cron expression: "0 3 * * *" (UTC)
//! tenant_setting = "app.workspace_id"  # row-level security on workspace_id for analytics_reader
//!
//! [views."analytics.mv_top_agents"]
//! reconcile = "0 4 * * *"       # incremental views: when to reconcile (cron in UTC, "every 6h",
//!                               # or "off"); default daily at 03:30 UTC
//! reconcile_policy = "report"   # "repair" (default): fix what it finds; "report": only report
//! ```
//! Settings are read and validated once at start; a bad file is an error that names the key.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

pub const SETTINGS_FILE: &str = "deltamv.toml";

#[derive(Debug, Error)]
pub enum SettingsError {
    #[error("{file}: {detail}")]
    Invalid { file: String, detail: String },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Incremental when the planner supports the query, else a refreshed materialized view.
    #[default]
    Auto,
    Fallback,
}

/// When a fallback view is refreshed regardless of changes.
#[derive(Clone, Debug)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<croner::Cron>),
}

impl Schedule {
    fn parse(text: &str) -> Result<Schedule, String> {
        if let Some(rest) = text.trim().strip_prefix("every ") {
            return parse_duration(rest).map(Schedule::Every);
        }
        croner::Cron::from_str(text)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| format!("schedule {text:?}: {e} (write \"every 10m\" or a cron expression like \"0 3 * * *\")"))
    }

    /// The first due time strictly after `after_micros` (microseconds since 1970, UTC).
    pub fn next_after(&self, after_micros: i64) -> Option<i64> {
        match self {
            Schedule::Every(d) => Some(after_micros.saturating_add(d.as_micros() as i64)),
            Schedule::Cron(c) => {
                let t = chrono::DateTime::from_timestamp_micros(after_micros)?;
                c.find_next_occurrence(&t, false)
                    .ok()
                    .map(|n| n.timestamp_micros())
            }
        }
    }
}

/// `500ms`, `30s`, `10m`, `2h`, `1d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("duration {text:?}: expected a number and a unit (ms, s, m, h, d)"))?;
    if unit.trim() == "ms" && n > 0 {
        return Ok(Duration::from_millis(n));
    }
    let secs = match unit.trim() {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        other => {
            return Err(format!(
                "duration {text:?}: unknown unit {other:?} (s, m, h, d)"
            ))
        }
    };
    if secs == 0 {
        return Err(format!("duration {text:?} must be positive"));
    }
    Ok(Duration::from_secs(secs))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    mode: Option<Mode>,
    min_interval_ms: Option<u64>,
    schedule: Option<String>,
    freshness_target_s: Option<u64>,
    tenant_setting: Option<String>,
    reconcile: Option<String>,
    reconcile_policy: Option<Policy>,
    require_incremental: Option<bool>,
}

/// What a scheduled reconcile does with the differences it finds (it always reports them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Repair,
    Report,
}

/// When incremental views are reconciled unless their settings say otherwise: daily, off-peak.
pub const DEFAULT_RECONCILE: &str = "30 3 * * *";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: RawView,
    #[serde(default)]
    views: BTreeMap<String, RawView>,
}

/// The settings of one view, defaults applied.
#[derive(Clone, Debug)]
pub struct ViewSettings {
    pub mode: Mode,
    pub min_interval: Duration,
    pub schedule: Option<Schedule>,
    pub freshness_target: Duration,
    /// Row-level security for readers: a row is visible when its `workspace_id` equals this
    /// session setting (e.g. "app.workspace_id").
    pub tenant_setting: Option<String>,
    /// Incremental views: when the engine reconciles it (`None`: never).
    pub reconcile: Option<Schedule>,
    pub reconcile_policy: Policy,
    /// `init` fails on this view if the planner cannot maintain it incrementally, instead of
    /// keeping it as a materialized view refreshed in full after every burst of changes. A view
    /// set to `mode = "fallback"` is exempt: that was asked for.
    pub require_incremental: bool,
}

/// All views' settings.
#[derive(Clone, Debug)]
pub struct Settings {
    defaults: ViewSettings,
    views: BTreeMap<String, ViewSettings>,
}

impl Settings {
    /// Reads `deltamv.toml` from the views directory (absent: all defaults).
    pub fn load(views_dir: &Path) -> Result<Settings, SettingsError> {
        let path = views_dir.join(SETTINGS_FILE);
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(SettingsError::Invalid {
                    file,
                    detail: e.to_string(),
                })
            }
        };
        Settings::parse(&text).map_err(|detail| SettingsError::Invalid { file, detail })
    }

    pub fn parse(text: &str) -> Result<Settings, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let base = ViewSettings {
            mode: Mode::Auto,
            min_interval: Duration::from_millis(5000),
            schedule: None,
            freshness_target: Duration::from_secs(60),
            tenant_setting: None,
            reconcile: Some(Schedule::parse(DEFAULT_RECONCILE)?),
            reconcile_policy: Policy::Repair,
            require_incremental: false,
        };
        let defaults = apply(&base, &raw.defaults, "defaults")?;
        let mut views = BTreeMap::new();
        for (name, v) in &raw.views {
            views.insert(name.clone(), apply(&defaults, v, name)?);
        }
        Ok(Settings { defaults, views })
    }

    pub fn view(&self, name: &str) -> &ViewSettings {
        self.views.get(name).unwrap_or(&self.defaults)
    }

    /// Requires the incremental path for every view (`init --require-incremental`).
    pub fn require_incremental_everywhere(&mut self) {
        self.defaults.require_incremental = true;
        for v in self.views.values_mut() {
            v.require_incremental = true;
        }
    }
}

fn apply(base: &ViewSettings, raw: &RawView, what: &str) -> Result<ViewSettings, String> {
    let schedule = match &raw.schedule {
        Some(s) => Some(Schedule::parse(s).map_err(|e| format!("[{what}] {e}"))?),
        None => base.schedule.clone(),
    };
    let reconcile = match raw.reconcile.as_deref().map(str::trim) {
        Some("off") => None,
        Some(s) => {
            Some(Schedule::parse(s).map_err(|e| format!("[{what}] reconcile: {e} (or \"off\")"))?)
        }
        None => base.reconcile.clone(),
    };
    Ok(ViewSettings {
        mode: raw.mode.unwrap_or(base.mode),
        min_interval: raw
            .min_interval_ms
            .map(Duration::from_millis)
            .unwrap_or(base.min_interval),
        schedule,
        freshness_target: raw
            .freshness_target_s
            .map(Duration::from_secs)
            .unwrap_or(base.freshness_target),
        tenant_setting: raw
            .tenant_setting
            .clone()
            .or_else(|| base.tenant_setting.clone()),
        reconcile,
        reconcile_policy: raw.reconcile_policy.unwrap_or(base.reconcile_policy),
        require_incremental: raw.require_incremental.unwrap_or(base.require_incremental),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let s = Settings::parse(
            "[defaults]\nmin_interval_ms = 100\n[views.\"a.b\"]\nmode = \"fallback\"\nschedule = \"every 10m\"\n",
        )
        .expect("valid");
        assert_eq!(s.view("a.b").mode, Mode::Fallback);
        assert_eq!(s.view("a.b").min_interval, Duration::from_millis(100));
        assert_eq!(s.view("x.y").mode, Mode::Auto);
        let every = s.view("a.b").schedule.as_ref().expect("schedule");
        assert_eq!(every.next_after(0), Some(600_000_000));
    }

    #[test]
    fn cron_and_errors() {
        let s = Settings::parse("[views.\"a.b\"]\nschedule = \"0 3 * * *\"\n").expect("valid");
        let cron = s.view("a.b").schedule.as_ref().expect("schedule");
        // 1970-01-01 00:00 UTC -> 03:00 the same day.
        assert_eq!(cron.next_after(0), Some(3 * 3_600_000_000));
        assert!(Settings::parse("[views.\"a.b\"]\nschedule = \"every 0m\"").is_err());
        assert!(Settings::parse("[views.\"a.b\"]\nschedule = \"sometimes\"")
            .expect_err("bad")
            .contains("cron"));
        let r = Settings::parse(
            "[defaults]\nreconcile = \"0 4 * * *\"\n[views.\"a.b\"]\nreconcile = \"off\"\nreconcile_policy = \"report\"",
        )
        .expect("valid");
        assert!(r.view("a.b").reconcile.is_none());
        assert_eq!(r.view("a.b").reconcile_policy, Policy::Report);
        let daily = r.view("x.y").reconcile.as_ref().expect("default schedule");
        assert_eq!(daily.next_after(0), Some(4 * 3_600_000_000));
        assert_eq!(r.view("x.y").reconcile_policy, Policy::Repair);
        assert!(Settings::parse("[defaults]\nreconcile = \"daily\"")
            .expect_err("bad")
            .contains("reconcile"));
        let strict = Settings::parse(
            "[defaults]\nrequire_incremental = true\n[views.\"a.b\"]\nrequire_incremental = false",
        )
        .expect("valid");
        assert!(strict.view("x.y").require_incremental);
        assert!(!strict.view("a.b").require_incremental);
        let mut all = Settings::parse("[views.\"a.b\"]\nmode = \"auto\"").expect("valid");
        assert!(!all.view("a.b").require_incremental);
        all.require_incremental_everywhere();
        assert!(all.view("a.b").require_incremental && all.view("x.y").require_incremental);
        assert!(Settings::parse("[views.\"a.b\"]\nmood = \"x\"")
            .expect_err("bad")
            .contains("mood"));
    }
}
