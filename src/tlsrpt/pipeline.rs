//! The daily TLSRPT pipeline over a store (RFC 8460 §4, §5): build the reports of one day from
//! the counts the engines wrote, queue them in the store's outbox, and deliver those that are
//! due. `mtasts report build|send` is this module plus argument parsing and printing.
//!
//! * [`Sender::from_config`]: who submits the reports (`[report]`), checked before anything is
//!   built or sent.
//! * [`build_day`]: for each policy domain counted that day that publishes a `_smtp._tls`
//!   record, the report of that domain's counts, queued with the record's destinations (a report
//!   already queued for that day and domain is left alone, so building twice never sends twice);
//!   optionally also written, gzipped, under its RFC file name.
//! * [`send_due`]: every queued report whose retry schedule says it is due (or every undelivered
//!   one), rebuilt from its stored counts and delivered ([`deliver`]), its state written back
//!   after each attempt, so that a restart neither loses nor duplicates a report.
//!
//! Like the rest of [`crate::tlsrpt`], nothing here reads the clock or draws random numbers:
//! `now` and the report-id nonces are arguments. Each step is reported through a callback as it
//! happens, so that a front-end prints it at once.

use std::path::Path;
use std::sync::Arc;

use crate::cache::{OutboxItem, OutboxStore, ReportStores};
use crate::config::Config;
use crate::counts::Refusal;
use crate::domain::Domain;
use crate::ports::{AddressResolver, DnsError, Resolver};
use crate::tlsrpt::deliver::{DeliveryOutcome, DeliverySettings, DeliveryState, RetrySchedule, deliver};
use crate::tlsrpt::dkim::DkimSigner;
use crate::tlsrpt::mail::EmailAddress;
use crate::tlsrpt::record::{self, Discovery, TlsRptRecord};
use crate::tlsrpt::report::{Day, DayCounts, ReportId, build_report};

/// Who submits the reports, from `[report]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    /// `organization-name`.
    pub organization: String,
    /// `contact-info`.
    pub contact: EmailAddress,
    /// The submitter domain: `[report] submitter`, else the domain of `contact`.
    pub submitter: Domain,
    /// The `From` of mailed reports: `[report] from`, else `contact`.
    pub from: EmailAddress,
}

impl Sender {
    /// Reads and checks `[report]`; `organization` and `contact` must be set.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let r = &config.report;
        let missing = |key: &str| format!("[report] {key} must be set to build and send TLSRPT reports");
        let organization = r.organization.clone().ok_or_else(|| missing("organization"))?;
        let contact_text = r.contact.as_deref().ok_or_else(|| missing("contact"))?;
        let contact = EmailAddress::parse(contact_text).map_err(|e| format!("[report] contact: {e}"))?;
        let submitter = match &r.submitter {
            Some(s) => Domain::parse(s).map_err(|e| format!("[report] submitter: {e}"))?,
            None => contact.domain().clone(),
        };
        let from = match &r.from {
            Some(f) => EmailAddress::parse(f).map_err(|e| format!("[report] from: {e}"))?,
            None => contact.clone(),
        };
        Ok(Self { organization, contact, submitter, from })
    }

    /// How reports are delivered: the configured trust anchors, this sender's `From`,
    /// `[report] sendmail`, and the DKIM key of `[report.dkim]` (read now: a missing or unusable
    /// key is an error before anything is sent).
    pub fn delivery_settings(&self, config: &Config) -> Result<DeliverySettings, String> {
        let anchors = config.trust_anchors().map_err(|e| e.to_string())?;
        let mut settings = DeliverySettings::new(anchors, self.from.clone());
        settings.sendmail = config.report.sendmail.clone();
        if let Some(d) = &config.report.dkim {
            let signer = DkimSigner::from_key_file(&d.domain, &d.selector, &d.key_file)
                .map_err(|e| format!("[report.dkim]: {e}"))?;
            settings.dkim = Some(Arc::new(signer));
        }
        Ok(settings)
    }
}

/// One step of [`build_day`].
#[derive(Debug)]
pub enum Built<'a> {
    /// A report was queued for `domain`, to these destinations.
    Queued {
        /// The policy domain.
        domain: &'a Domain,
        /// The new report's id.
        report_id: &'a str,
        /// Its destinations, as published.
        rua: &'a [String],
        /// When it is first due (Unix seconds; RPT-23).
        due: u64,
    },
    /// A report for `domain` and that day was already queued; it is left alone.
    AlreadyQueued {
        /// The policy domain.
        domain: &'a Domain,
    },
    /// `domain` publishes no (valid, single) TLSRPT record: no report.
    NoRecord {
        /// The policy domain.
        domain: &'a Domain,
    },
    /// The record lookup failed for now: no report this time.
    LookupFailed {
        /// The policy domain.
        domain: &'a Domain,
        /// Why.
        error: DnsError,
    },
}

/// What [`build_day`] builds.
#[derive(Clone, Copy, Debug)]
pub struct DayRun<'a> {
    /// The day reported on.
    pub day: Day,
    /// Now (Unix seconds): the queued reports are due from then.
    pub now: u64,
    /// A directory to create, and to write a copy of each report into (`.json.gz`, its RFC file
    /// name).
    pub out: Option<&'a Path>,
    /// `[report] send_delay_max_s` (RPT-23): a new report is first due at the end of the day
    /// plus a delay drawn uniformly from 0 to this (with `nonce`), or now if that has passed.
    /// 0: due now.
    pub send_delay_max: u64,
}

/// When a report of `day` built at `now` is first due (RPT-23): a random point in the
/// `send_delay_max` seconds after the day ends (`draw` is uniform over `u64`), or `now` if that
/// point has passed or spreading is off.
pub fn first_due(day: Day, now: u64, send_delay_max: u64, draw: u64) -> u64 {
    if send_delay_max == 0 {
        return now;
    }
    let delay = draw % send_delay_max.saturating_add(1);
    now.max(day.end().saturating_add(1).saturating_add(delay))
}

/// Builds and queues the reports of `run.day` (see the module documentation); returns how many
/// were queued. `nonce` gives each report-id its unique part. An error (the store, a report that
/// cannot be built, the directory) stops the run; what was queued before stays queued.
pub fn build_day<R: Resolver + ?Sized>(
    stores: &ReportStores,
    resolver: &R,
    sender: &Sender,
    run: DayRun<'_>,
    nonce: &mut dyn FnMut() -> u64,
    on: &mut dyn FnMut(Built<'_>),
) -> Result<usize, String> {
    let DayRun { day, now, out, send_delay_max } = run;
    let counts = stores.counts.report_counts(day).map_err(|e| e.to_string())?;
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut built = 0;
    for domain in counts.domains() {
        let record = match record::discover(resolver, domain) {
            Ok(Discovery::Record(r)) => r,
            Ok(_) => {
                on(Built::NoRecord { domain });
                continue;
            }
            Err(error) => {
                on(Built::LookupFailed { domain, error });
                continue;
            }
        };
        let only = counts_of(&counts, domain);
        let id = ReportId::new(day, domain, nonce(), &sender.submitter);
        let report =
            build_report(&sender.organization, &sender.contact, &sender.submitter, domain, day, &only, id)
                .map_err(|e| format!("{domain}: {e}"))?;
        let rua: Vec<String> = record.rua.iter().map(ToString::to_string).collect();
        let item = OutboxItem {
            report_id: report.report_id().as_str().to_owned(),
            day,
            domain: domain.clone(),
            counts: only,
            record: record.to_stored_text(),
            state: DeliveryState::new(first_due(day, now, send_delay_max, nonce())),
        };
        let queued = stores.outbox.outbox_put(&item).map_err(|e| e.to_string())?;
        if let Some(dir) = out {
            let path = dir.join(report.file_name());
            std::fs::write(&path, report.to_gzip())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        if queued {
            built += 1;
            let due = item.state.next_attempt_at;
            on(Built::Queued { domain, report_id: report.report_id().as_str(), rua: &rua, due });
        } else {
            on(Built::AlreadyQueued { domain });
        }
    }
    Ok(built)
}

/// The counts of one policy domain.
fn counts_of(counts: &DayCounts, domain: &Domain) -> DayCounts {
    let mut only = DayCounts::new();
    for (policy, c) in counts.policies(domain) {
        only.add_success(domain, policy, c.successes);
        for (f, &n) in &c.failures {
            only.add_failure(domain, policy, f.clone(), n);
        }
    }
    only
}

/// When a destination that keeps refusing reports is left out (RPT-24): after refusing
/// `after` reports in a row for good (see [`crate::tlsrpt::deliver::UriOutcome::permanent`]), for
/// `period` seconds from the last refusal. `after = 0` never suppresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suppression {
    /// Refused reports in a row that suppress a destination.
    pub after: u32,
    /// Seconds of suppression after the last refusal.
    pub period: u64,
}

impl Suppression {
    /// From `[report] suppress_after_failures` and `suppress_for_s`.
    pub fn from_config(config: &Config) -> Self {
        Self { after: config.report.suppress_after_failures, period: config.report.suppress_for_s }
    }
}

/// A destination that is suppressed now (RPT-24).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suppressed {
    /// The destination, as published.
    pub uri: String,
    /// Reports in a row it refused.
    pub refusals: u32,
    /// Suppressed until then (Unix seconds).
    pub until: u64,
    /// What it said last.
    pub last_error: String,
}

/// The destinations suppressed at `now`, judged from the queued reports' histories: for each
/// destination, the reports that listed it, newest day first, skipping those it was left out of
/// (suppressed) and those not yet tried; the refusals in a row from the newest one count.
pub fn suppressed(items: &[OutboxItem], suppression: Suppression, now: u64) -> Vec<Suppressed> {
    if suppression.after == 0 {
        return Vec::new();
    }
    let mut order: Vec<&OutboxItem> = items.iter().collect();
    order.sort_by(|a, b| b.day.days().cmp(&a.day.days()).then_with(|| b.report_id.cmp(&a.report_id)));
    let mut uris: Vec<String> = Vec::new();
    for item in &order {
        if let Ok(record) = TlsRptRecord::from_stored_text(&item.record) {
            for uri in record.rua.iter().map(ToString::to_string) {
                if !uris.contains(&uri) {
                    uris.push(uri);
                }
            }
        }
    }
    let mut out = Vec::new();
    for uri in uris {
        let mut refusals = 0;
        let mut last: Option<&crate::counts::Refusal> = None;
        for item in &order {
            if item.state.suppressed.contains(&uri) {
                continue;
            }
            match item.state.refused.get(&uri) {
                Some(r) => {
                    refusals += 1;
                    if last.is_none_or(|l| r.at > l.at) {
                        last = Some(r);
                    }
                }
                None if item.state.attempts == 0 => {}
                None => {
                    let listed = TlsRptRecord::from_stored_text(&item.record)
                        .is_ok_and(|r| r.rua.iter().any(|u| u.to_string() == uri));
                    if listed {
                        break;
                    }
                }
            }
        }
        if let Some(last) = last {
            let until = last.at.saturating_add(suppression.period);
            if refusals >= suppression.after && now < until {
                out.push(Suppressed { uri, refusals, until, last_error: last.error.clone() });
            }
        }
    }
    out
}

/// Delivers the queued reports that are due at `now` (all undelivered ones with `force`), with
/// the default [`RetrySchedule`]; `on` hears of each attempt, with the report's updated state.
/// Each attempt is claimed first ([`OutboxStore::outbox_claim`]): a report another process or
/// host is sending, or has just sent, is skipped, so a fleet sharing a Redis outbox sends each
/// report once. Destinations that refused the report for good are not tried again for it, and suppressed
/// destinations ([`suppressed`]) are left out; a report left with no destination to try is done,
/// undelivered. Returns how many attempts failed. A store error, or a queued report that cannot
/// be rebuilt, stops the run.
#[allow(clippy::too_many_arguments)]
pub fn send_due(
    store: &dyn OutboxStore,
    settings: &DeliverySettings,
    resolver: &Arc<dyn AddressResolver>,
    sender: &Sender,
    suppression: Suppression,
    now: u64,
    force: bool,
    on: &mut dyn FnMut(&OutboxItem, &DeliveryOutcome),
) -> Result<usize, String> {
    let schedule = RetrySchedule::default();
    let mut failed = 0;
    let mut items = store.outbox().map_err(|e| e.to_string())?;
    for i in 0..items.len() {
        let mut item = items[i].clone();
        if item.state.done || !(force || item.state.is_due(now)) {
            continue;
        }
        let record = TlsRptRecord::from_stored_text(&item.record)
            .map_err(|e| format!("{}: stored record: {e}", item.domain))?;
        let id = ReportId::parse(&item.report_id).map_err(|e| format!("{}: {e}", item.report_id))?;
        let report = build_report(
            &sender.organization,
            &sender.contact,
            &sender.submitter,
            &item.domain,
            item.day,
            &item.counts,
            id,
        )
        .map_err(|e| format!("{}: {e}", item.domain))?;
        // One sender per attempt, fleet-wide (RPT-25): the lease outlasts the slowest attempt.
        let per_destination = settings.timeout.max(settings.sendmail_timeout).as_secs();
        let lease = per_destination
            .saturating_mul(u64::try_from(record.rua.len()).unwrap_or(u64::MAX))
            .saturating_add(60);
        if !store.outbox_claim(&item.report_id, &item.state, now, lease).map_err(|e| e.to_string())? {
            continue; // another process or host is sending it, or just has
        }
        let now_suppressed = suppressed(&items, suppression, now);
        let mut rua = Vec::new();
        for uri in &record.rua {
            let text = uri.to_string();
            if item.state.refused.contains_key(&text) {
                continue;
            }
            if now_suppressed.iter().any(|s| s.uri == text) {
                if !item.state.suppressed.contains(&text) {
                    item.state.suppressed.push(text);
                }
                continue;
            }
            rua.push(uri.clone());
        }
        let outcome = if rua.is_empty() {
            DeliveryOutcome { results: Vec::new() }
        } else {
            deliver(settings, Arc::clone(resolver), &report, &rua, now)
        };
        for r in &outcome.results {
            if let (Err(error), true) = (&r.result, r.permanent) {
                item.state.refused.insert(r.uri.clone(), Refusal { at: now, error: error.clone() });
            }
        }
        item.state.record(now, &outcome, &schedule);
        if !item.state.delivered && item.state.refused.len() + item.state.suppressed.len() >= record.rua.len()
        {
            // Nothing left to try: every destination refused the report for good or is suppressed.
            item.state.done = true;
        }
        store.outbox_update(&item.report_id, &item.state).map_err(|e| e.to_string())?;
        if !outcome.delivered() {
            failed += 1;
        }
        on(&item, &outcome);
        items[i] = item;
    }
    Ok(failed)
}
