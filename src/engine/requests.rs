//! Requests the engine serves between batches: refreshes and reconciles asked for from SQL
//! (`deltamv.refresh_view` & co.), from the command line, or due on a view's schedule.
//!
//! SQL callers write a non-transactional logical message (see `deltamv.submit_request` in the
//! bookkeeping DDL), so a request reaches the engine through the replication stream, after every
//! transaction that committed before the call: a refresh asked for right after a write includes
//! it. The engine records each request and its result in `deltamv.requests` (which the caller
//! polls) and each view's outcome in `deltamv.refresh_history`. A request is claimed by its id
//! before it runs, so one the stream delivers again after a restart is not served twice, while
//! one interrupted half-way is served again.
//!
//! A reconcile compares at one LSN beside the running engine ([`super::live_reconcile`]); a view
//! whose target differs there is compared again with the engine held at one LSN
//! ([`super::held_reconcile`]), which can tell a damaged target from a wrong state and repair it.

use std::time::Instant;

use serde::Deserialize;
use tokio_postgres::Client;
use uuid::Uuid;

use super::{EngineError, Loop};
use crate::bookkeeping::history::{self, Counts, RefreshKind};
use crate::bookkeeping::requests;
use crate::pg::{sql_err, Lsn};
use crate::reconcile::{Report, RequestDetail, ViewResult};
use crate::settings::Policy;

/// The prefix of request messages.
pub const REQUEST_PREFIX: &str = "deltamv.request";

/// Differing rows kept per view in a request's result (all are counted).
const DETAIL_ROWS: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Refresh,
    RefreshAll,
    Reconcile,
    ReconcileAll,
    Scheduled,
}

impl Kind {
    fn parse(text: &str) -> Option<Kind> {
        Some(match text {
            "refresh" => Kind::Refresh,
            "refresh all" => Kind::RefreshAll,
            "reconcile" => Kind::Reconcile,
            "reconcile all" => Kind::ReconcileAll,
            _ => return None,
        })
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Kind::Refresh => "refresh",
            Kind::RefreshAll => "refresh all",
            Kind::Reconcile => "reconcile",
            Kind::ReconcileAll => "reconcile all",
            Kind::Scheduled => "scheduled reconcile",
        }
    }

    fn history(self) -> RefreshKind {
        match self {
            Kind::Refresh | Kind::RefreshAll => RefreshKind::FullRecompute,
            Kind::Reconcile | Kind::ReconcileAll => RefreshKind::Reconcile,
            Kind::Scheduled => RefreshKind::ScheduledReconcile,
        }
    }
}

/// A request as the engine serves it.
#[derive(Clone, Debug)]
pub struct Request {
    pub id: Uuid,
    pub kind: Kind,
    pub view: Option<String>,
    pub repair: bool,
    pub by: String,
    /// When the caller asked (its clock_timestamp(), as text).
    pub at: Option<String>,
}

#[derive(Deserialize)]
struct Wire {
    id: String,
    kind: String,
    view: Option<String>,
    repair: Option<bool>,
    by: Option<String>,
    at: Option<String>,
}

impl Request {
    fn claim(&self) -> requests::Claim<'_> {
        requests::Claim {
            id: self.id,
            kind: self.kind.as_str(),
            view: self.view.as_deref(),
            repair: self.repair,
            by: &self.by,
            at: self.at.as_deref(),
        }
    }
}

/// Reads a request message; `Err` names what is wrong with it.
pub fn parse(content: &[u8]) -> Result<Request, String> {
    let w: Wire = serde_json::from_slice(content).map_err(|e| e.to_string())?;
    let kind = Kind::parse(&w.kind).ok_or_else(|| format!("unknown request kind {:?}", w.kind))?;
    let id = Uuid::parse_str(&w.id).map_err(|e| format!("request id {:?}: {e}", w.id))?;
    Ok(Request {
        id,
        kind,
        view: w.view,
        repair: w.repair.unwrap_or(false),
        by: w.by.unwrap_or_default(),
        at: w.at,
    })
}

/// What a request did to one view.
#[derive(Debug, Default)]
pub(super) struct ViewOutcome {
    pub(super) view: String,
    pub(super) compared: Option<Report>,
    /// Rows where the engine's own state differs from the view's SQL.
    pub(super) state_differences: usize,
    pub(super) repaired: usize,
    pub(super) error: Option<String>,
}

impl ViewOutcome {
    fn differences(&self) -> usize {
        self.compared.as_ref().map_or(0, |r| r.diffs.len())
    }

    fn left(&self) -> usize {
        self.differences() - self.repaired
    }

    fn counts(&self) -> Counts {
        Counts {
            rows_changed: Some(self.repaired as i64),
            rows_compared: self.compared.as_ref().map(|r| r.expected_rows as i64),
            differences: self.compared.as_ref().map(|r| r.diffs.len() as i64),
        }
    }

    fn result(&self) -> ViewResult {
        ViewResult {
            view: self.view.clone(),
            expected_rows: self.compared.as_ref().map(|r| r.expected_rows),
            target_rows: self.compared.as_ref().map(|r| r.actual_rows),
            differing: self.differences(),
            repaired: self.repaired,
            state_differing: self.state_differences,
            error: self.error.clone(),
            rows: self
                .compared
                .iter()
                .flat_map(|r| &r.diffs)
                .take(DETAIL_ROWS)
                .cloned()
                .collect(),
        }
    }
}

impl Loop<'_> {
    /// Ends a live reconcile whose comparison finished, then serves queued requests and the
    /// reconciles that are due, one live reconcile at a time.
    pub(super) async fn serve_requests(&mut self) -> Result<(), EngineError> {
        self.finish_live().await?;
        while self.live.is_none() {
            let Some(req) = self.requests.pop_front() else {
                // None pending: the slot may pass the messages of those served.
                self.progress.cap_ack_off();
                return self.scheduled_reconciles().await;
            };
            self.serve(req).await?;
        }
        Ok(())
    }

    /// Queues a request message (ignored with a warning when unreadable). Until it is served,
    /// the slot is not acknowledged past the targets' position now, which is before the message.
    pub(super) fn queue_request(&mut self, content: &[u8]) {
        match parse(content) {
            Ok(r) => {
                self.progress.cap_ack(self.progress.targets());
                self.requests.push_back(r)
            }
            Err(e) => tracing::warn!(error = %e, "ignoring an unreadable request message"),
        }
    }

    async fn serve(&mut self, req: Request) -> Result<(), EngineError> {
        // A request sees the targets as of every batch before it.
        self.settle().await?;
        if !requests::claim(&self.prepared.client, &req.claim()).await? {
            return Ok(()); // served before a restart
        }
        let started = Instant::now();
        tracing::info!(id = %req.id, kind = req.kind.as_str(), view = req.view.as_deref().unwrap_or("(all)"), by = %req.by, "serving request");
        match self.resolve(&req).await? {
            Err(e) => self.finish(&req, started, Err(e)).await,
            Ok((views, fallbacks)) if views.is_empty() => {
                let outcomes = self.refresh_fallbacks(req.id, &fallbacks).await;
                self.finish(&req, started, Ok((Lsn::ZERO, outcomes))).await
            }
            Ok((views, fallbacks)) => self.start_live(req, started, views, fallbacks).await,
        }
    }

    /// The incremental views a request compares (each with whether to repair) and the fallback
    /// views it refreshes; `Err` is a failure of the whole request (recorded, the engine goes on).
    async fn resolve(
        &mut self,
        req: &Request,
    ) -> Result<Result<(Vec<(usize, bool)>, Vec<usize>), String>, EngineError> {
        let incremental = |name: &str| {
            self.prepared
                .plans
                .iter()
                .position(|p| p.name.matches(name))
        };
        let fallback = |name: &str| {
            self.prepared
                .fallbacks
                .iter()
                .position(|p| p.name.matches(name))
        };
        let failed = self.failed_views().await?;
        let live: Vec<usize> = (0..failed.len()).filter(|v| !failed[*v]).collect();
        let (views, fallbacks): (Vec<usize>, Vec<usize>) = match (req.kind, req.view.as_deref()) {
            (Kind::Refresh | Kind::Reconcile, Some(name)) => {
                match (incremental(name), fallback(name)) {
                    (Some(v), _) if !live.contains(&v) => {
                        return Ok(Err(format!(
                        "{name} is failed: see deltamv status; `deltamv init --resync` rebuilds it"
                    )))
                    }
                    (Some(v), _) => (vec![v], vec![]),
                    (None, Some(f)) if req.kind == Kind::Refresh => (vec![], vec![f]),
                    (None, Some(_)) => {
                        return Ok(Err(format!(
                            "{name} is a fallback view: it is refreshed, not reconciled"
                        )))
                    }
                    (None, None) => return Ok(Err(format!("no view named {name}"))),
                }
            }
            (Kind::RefreshAll, _) => (live, (0..self.prepared.fallbacks.len()).collect()),
            (Kind::ReconcileAll | Kind::Scheduled, _) => (live, vec![]),
            (_, None) => return Ok(Err("the request names no view".into())),
        };
        let repair = matches!(req.kind, Kind::Refresh | Kind::RefreshAll) || req.repair;
        Ok(Ok((
            views.into_iter().map(|v| (v, repair)).collect(),
            fallbacks,
        )))
    }

    /// The plans of `views`, each with the date its CURRENT_DATE is at in the state (what a
    /// recomputation pins it to), and the name of a new temporary slot for their reconcile.
    pub(super) async fn pinned_plans(
        &mut self,
        views: &[(usize, bool)],
    ) -> Result<(Vec<(crate::plan::ViewPlan, String)>, String), EngineError> {
        let indexes: Vec<usize> = views.iter().map(|(v, _)| *v).collect();
        let dates = self
            .state
            .call(move |m| indexes.iter().map(|v| m.date(*v)).collect::<Vec<_>>())
            .await?;
        let pinned = views
            .iter()
            .zip(&dates)
            .map(|((v, _), d)| {
                (
                    self.prepared.plans[*v].clone(),
                    crate::pgtime::format_date(*d),
                )
            })
            .collect();
        self.reconciles += 1;
        let slot = format!("deltamv_rc_{}_{}", std::process::id(), self.reconciles);
        Ok((pinned, slot))
    }

    /// Refreshes fallback views (each recorded in the history by `refresh_now` itself).
    pub(super) async fn refresh_fallbacks(
        &mut self,
        id: Uuid,
        fallbacks: &[usize],
    ) -> Vec<ViewOutcome> {
        let mut outcomes = Vec::new();
        for f in fallbacks {
            let plan = self.prepared.fallbacks[*f].clone();
            requests::note_phase(&self.prepared.client, id, "refreshing").await;
            let error = crate::refresher::refresh_now(&self.prepared.client, &plan)
                .await
                .err();
            outcomes.push(ViewOutcome {
                view: plan.name.to_string(),
                error,
                ..ViewOutcome::default()
            });
        }
        outcomes
    }

    /// Records a request's result in `deltamv.requests` and each view's in the history.
    pub(super) async fn finish(
        &mut self,
        req: &Request,
        started: Instant,
        outcome: Result<(Lsn, Vec<ViewOutcome>), String>,
    ) -> Result<(), EngineError> {
        let client = &self.prepared.client;
        let (lsn, outcomes, error) = match outcome {
            Ok((lsn, o)) => {
                let errors: Vec<String> = o
                    .iter()
                    .filter_map(|v| v.error.as_ref().map(|e| format!("{}: {e}", v.view)))
                    .collect();
                (lsn, o, (!errors.is_empty()).then(|| errors.join("; ")))
            }
            Err(e) => (Lsn::ZERO, vec![], Some(e)),
        };
        for o in outcomes.iter().filter(|o| o.compared.is_some()) {
            history::record(
                client,
                &o.view,
                req.kind.history(),
                started,
                o.counts(),
                o.error.as_deref(),
            )
            .await
            .map_err(sql_err(format!("recording the history of {}", o.view)))?;
        }
        let sum = |f: &dyn Fn(&ViewOutcome) -> usize| outcomes.iter().map(f).sum::<usize>() as i64;
        let differences = sum(&|o| o.differences());
        let compared = sum(&|o| o.compared.as_ref().map_or(0, |r| r.expected_rows));
        let status = if error.is_some() {
            "failed"
        } else if sum(&|o| o.left()) > 0 {
            "differences"
        } else {
            "done"
        };
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        if outcomes.iter().any(|o| o.compared.is_some()) {
            self.metrics.reconciles.fetch_add(1, relaxed);
            self.metrics
                .reconcile_differences
                .fetch_add(differences as u64, relaxed);
        }
        for o in outcomes.iter().filter(|o| o.differences() > 0) {
            let rows: Vec<String> = o
                .compared
                .iter()
                .flat_map(|r| &r.diffs)
                .take(5)
                .map(|d| {
                    format!(
                        "key {:?}: expected {:?}, target {:?}",
                        d.key, d.expected, d.actual
                    )
                })
                .collect();
            tracing::error!(
                view = %o.view,
                request = %req.id,
                differing = o.differences(),
                repaired = o.repaired,
                state_differing = o.state_differences,
                rows = %rows.join("; "),
                "{} found rows that differ from the view's SQL: this is a deltamv bug; please report it with these rows (all of them: SELECT detail FROM deltamv.requests WHERE request_id = {}), `deltamv explain --view {}` and this log (when state_differing > 0 the engine's state is wrong too and was not patched: `deltamv init --resync` rebuilds it)",
                req.kind.as_str(),
                req.id,
                o.view
            );
        }
        let detail = RequestDetail {
            views: outcomes.iter().map(ViewOutcome::result).collect(),
        };
        // A result of strings and numbers always encodes; Null would only lose the detail.
        let detail = serde_json::to_value(&detail).unwrap_or_default();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let finished = requests::Finished {
            status,
            lsn: (lsn > Lsn::ZERO).then_some(lsn),
            rows_compared: compared,
            differences,
            rows_changed: sum(&|o| o.repaired),
            duration_ms: ms,
            error,
            detail,
        };
        requests::finish(client, req.id, &finished).await?;
        tracing::info!(
            id = %req.id,
            status,
            differences,
            ms = ms as u64,
            "request served"
        );
        Ok(())
    }

    /// Runs the reconciles that are due on the views' schedules (one snapshot for all due).
    async fn scheduled_reconciles(&mut self) -> Result<(), EngineError> {
        let now = self.clock.now_micros();
        let due: Vec<usize> = (0..self.reconcile_due.len())
            .filter(|v| self.reconcile_due[*v].is_some_and(|t| now >= t))
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let failed = self.failed_views().await?;
        let mut views: Vec<(usize, bool)> = Vec::new();
        for v in due {
            let settings = self
                .prepared
                .settings
                .view(&self.prepared.plans[v].name.to_string());
            self.reconcile_due[v] = settings.reconcile.as_ref().and_then(|s| s.next_after(now));
            if !failed[v] {
                views.push((v, settings.reconcile_policy == Policy::Repair));
            }
        }
        if views.is_empty() {
            return Ok(());
        }
        self.settle().await?;
        let id: Uuid = self
            .prepared
            .client
            .query_one("SELECT gen_random_uuid()", &[])
            .await
            .map_err(sql_err("drawing a request id"))?
            .get(0);
        let names: Vec<String> = views
            .iter()
            .map(|(v, _)| self.prepared.plans[*v].name.to_string())
            .collect();
        let req = Request {
            id,
            kind: Kind::Scheduled,
            view: (names.len() == 1).then(|| names[0].clone()),
            repair: views.iter().any(|(_, r)| *r),
            by: "schedule".into(),
            at: None,
        };
        requests::claim(&self.prepared.client, &req.claim()).await?;
        tracing::info!(id = %id, views = %names.join(", "), "scheduled reconcile");
        self.start_live(req, Instant::now(), views, vec![]).await
    }
}

/// Closes scheduled reconciles a stop interrupted (requested ones come again on the stream:
/// the slot was not acknowledged past their message).
pub async fn close_interrupted(client: &Client) -> Result<(), EngineError> {
    requests::close_interrupted(
        client,
        Kind::Scheduled.as_str(),
        "interrupted: the engine stopped while serving it; the next one runs on schedule",
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_messages_parse_or_say_what_is_wrong() {
        let id = "0b7e7a36-5a3c-4c59-9d0f-2f1b8f1f4a11";
        let msg = |rest: &str| format!(r#"{{"id": "{id}", {rest}}}"#);
        let r = parse(
            msg(r#""kind": "reconcile", "view": "a.b", "repair": true, "by": "app""#).as_bytes(),
        )
        .expect("valid");
        assert_eq!(
            (r.id.to_string(), r.kind, r.view.as_deref(), r.repair),
            (id.to_string(), Kind::Reconcile, Some("a.b"), true)
        );
        let all = parse(msg(r#""kind": "refresh all", "view": null, "repair": null"#).as_bytes())
            .expect("valid");
        assert_eq!(
            (all.kind, all.view, all.repair),
            (Kind::RefreshAll, None, false)
        );
        assert!(parse(msg(r#""kind": "explode""#).as_bytes())
            .expect_err("bad")
            .contains("explode"));
        assert!(parse(br#"{"id": "7", "kind": "refresh"}"#)
            .expect_err("bad")
            .contains("request id"));
        assert!(parse(b"not json").is_err());
    }
}
