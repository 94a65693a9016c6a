//! `index.html`: one self-contained page per run. Inline SVG and CSS only —
//! no script, no fonts, no network — so it opens anywhere, also from a CI
//! artifact.
//!
//! Charts are bounded: at most [`POINTS_PER_CHART_MAX`] points per latency
//! chart (every `fail` and `info` kept first, `ok` points thinned evenly),
//! and at most [`BUCKETS_MAX`] throughput buckets.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{ChartOp, Charts, Results, WindowReport, CHECKER_HTML_FILE, HISTORY_FILE, RESULTS_FILE};
use crate::history::EventType;
use crate::topic::checker::{Findings, Message, TopicCheckResult};
use crate::validity::Validity;

/// Most points drawn in one latency chart.
pub const POINTS_PER_CHART_MAX: usize = 6_000;
/// About this many throughput buckets (1, 2 or 5 × 10^k s wide).
pub const BUCKETS_TARGET: usize = 100;
/// Most throughput buckets.
pub const BUCKETS_MAX: usize = 300;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 36.0;

const OK_COLOR: &str = "#1f77b4";
const FAIL_COLOR: &str = "#d62728";
const INFO_COLOR: &str = "#ff9f1c";

fn outcome_color(outcome: EventType) -> &'static str {
    match outcome {
        EventType::Ok => OK_COLOR,
        EventType::Fail => FAIL_COLOR,
        _ => INFO_COLOR,
    }
}

fn nemesis_color(kind: &str) -> &'static str {
    match kind {
        "kill" => "#e45756",
        "pause" => "#b279a2",
        "partition" => "#f58518",
        "clock" => "#54a24b",
        "membership" => "#4c78a8",
        "kill-isr" => "#9d755d",
        _ => "#999999",
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page.
pub fn render(results: &Results, charts: &Charts) -> String {
    let t_max_s = time_span_s(results, &charts.throughput);
    let mut page = String::new();
    let what = match &results.level {
        Some(level) => level.clone(),
        None => results.workload.clone(),
    };
    let title = format!("capkv jepsen: {what} / {}", nemesis_name(results));
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{}</style></head><body>\n",
        escape(&title),
        STYLE
    );
    let _ = writeln!(page, "<h1>{}</h1>", escape(&title));
    verdict_section(&mut page, results);
    let _ = writeln!(page, "<h2>Latency over time</h2>");
    let _ = writeln!(
        page,
        "<p class=\"legend\">{} {} {} — shaded: nemesis windows ({}). Latency on a log scale; x: seconds since the run started.</p>",
        swatch(OK_COLOR, "ok"),
        swatch(FAIL_COLOR, "fail"),
        swatch(INFO_COLOR, "info (unknown)"),
        ["kill", "pause", "partition", "clock", "membership", "kill-isr"]
            .iter()
            .map(|k| swatch(nemesis_color(k), k))
            .collect::<Vec<_>>()
            .join(" ")
    );
    for (title, of_series) in &charts.latency {
        let _ = writeln!(page, "<h3>{}</h3>", escape(title));
        page.push_str(&latency_chart(of_series, &results.nemesis_windows, t_max_s));
    }
    let _ = writeln!(page, "<h2>Throughput over time</h2>");
    page.push_str(&throughput_chart(&charts.throughput, &results.nemesis_windows, t_max_s));
    checker_sections(&mut page, results);
    nemesis_section(&mut page, results);
    config_section(&mut page, results);
    page.push_str("</body></html>\n");
    page
}

fn nemesis_name(results: &Results) -> String {
    if results.nemesis.is_empty() {
        "no nemesis".into()
    } else {
        results.nemesis.join(",")
    }
}

fn swatch(color: &str, label: &str) -> String {
    format!("<span class=\"sw\" style=\"background:{color}\"></span>{}", escape(label))
}

fn time_span_s(results: &Results, ops: &[ChartOp]) -> f64 {
    let ops_end = ops.iter().map(|op| op.complete_ns).max().unwrap_or(0) as f64 / 1e9;
    let windows_end = results.nemesis_windows.iter().filter_map(|w| w.end_s.or(Some(w.start_s))).fold(0.0, f64::max);
    ops_end.max(windows_end).max(results.config.time_s).max(1.0)
}

fn verdict_section(page: &mut String, results: &Results) {
    let (class, word) = match results.valid {
        Validity::Valid => ("valid", "VALID"),
        Validity::Invalid => ("invalid", "INVALID"),
        Validity::Unknown => ("unknown", "UNKNOWN"),
    };
    let setting = match (&results.level, &results.topic) {
        (Some(level), _) => format!("level <b>{}</b>", escape(level)),
        (None, Some(t)) => format!(
            "workload <b>topic</b> ({} partitions, replication factor {}, min.insync.replicas {}, acks {}, unclean leader election {})",
            t.partitions,
            t.replication_factor,
            t.min_insync_replicas,
            escape(&t.acks),
            if t.unclean_leader_election { "<b>on</b>" } else { "off" }
        ),
        (None, None) => format!("workload <b>{}</b>", escape(&results.workload)),
    };
    let _ = writeln!(
        page,
        "<div class=\"verdict {class}\">{word}</div>\n<p>{setting}, nemesis <b>{}</b>, checkers <b>{}</b>: {} operations — {} ok, {} fail, {} info.</p>",
        escape(&nemesis_name(results)),
        escape(&results.checkers.join(", ")),
        results.ops,
        results.ok,
        results.fail,
        results.info
    );
    if !results.reasons.is_empty() || !results.errors.is_empty() {
        page.push_str("<ul class=\"reasons\">");
        for r in results.reasons.iter().chain(&results.errors) {
            let _ = write!(page, "<li>{}</li>", escape(r));
        }
        page.push_str("</ul>\n");
    }
    let _ = writeln!(
        page,
        "<p>Files: <a href=\"{HISTORY_FILE}\">{HISTORY_FILE}</a>, <a href=\"{RESULTS_FILE}\">{RESULTS_FILE}</a>, node logs in <code>nodes/nN/kv.log</code>.</p>"
    );
}

fn checker_sections(page: &mut String, results: &Results) {
    if let Some(lin) = &results.checker.linearizable {
        let _ = writeln!(
            page,
            "<h2>Linearizability</h2>\n<p><b>{}</b> — {} operations checked in {} ms.</p>",
            escape(&lin.result),
            lin.ops,
            lin.elapsed_ms
        );
        if let Some(error) = &lin.error {
            let _ = writeln!(page, "<p class=\"bad\">{}</p>", escape(error));
        }
        if let Some(html) = &lin.html {
            let _ = writeln!(
                page,
                "<p>Interactive visualization of the violation (porcupine-rs): <a href=\"{0}\">{0}</a></p>",
                escape(html)
            );
        } else if lin.valid == Validity::Invalid {
            let _ = writeln!(page, "<p>(see <code>{CHECKER_HTML_FILE}</code> if it could be written)</p>");
        }
        if let Some(explanation) = &lin.explanation {
            let _ = writeln!(page, "<h3>Why</h3>\n<pre>{}</pre>", escape(explanation));
        }
    }
    if let Some(conv) = &results.checker.convergence {
        let _ = writeln!(
            page,
            "<h2>Convergence</h2>\n<p><b>{}</b> — {} keys, {} agreeing on every node; {}.</p>",
            conv.valid,
            conv.keys,
            conv.agreeing_keys,
            match conv.converged_after_ms {
                Some(ms) => format!("all replicas agreed {ms} ms after the heal"),
                None => "replicas never all agreed within the harness's patience".into(),
            }
        );
        if conv.unversioned_acks > 0 {
            let _ = writeln!(
                page,
                "<p>{} acknowledged writes carried no version: the check fell back to values only.</p>",
                conv.unversioned_acks
            );
        }
        if !conv.problems.is_empty() {
            page.push_str("<table><tr><th>key</th><th>problem</th><th>detail</th></tr>\n");
            for p in &conv.problems {
                let kind =
                    serde_json::to_value(p.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
                let _ = writeln!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&p.key),
                    escape(&kind),
                    escape(&p.detail)
                );
            }
            page.push_str("</table>\n");
        }
    }
    if let Some(topic) = &results.checker.topic {
        topic_section(page, results, topic);
    }
    if let Some(stale) = &results.stale_reads {
        stale_section(page, stale);
    }
    latency_table(page, results);
}

fn topic_section(page: &mut String, results: &Results, r: &TopicCheckResult) {
    let _ = writeln!(
        page,
        "<h2>Topic checker</h2>\n<p><b>{}</b> — {} sends: {} acknowledged, {} failed, {} unknown; {} records read. \
         <b>{} lost</b>, <b>{} duplicated</b>, <b>{} reordered</b> ({} within one producer), {} at a wrong offset, {} unexpected.</p>",
        r.valid,
        r.sends,
        r.acked,
        r.failed,
        r.unknown,
        r.records_read,
        r.lost.count,
        r.duplicated.count,
        r.reordered.count,
        r.reordered_same_producer,
        r.wrong_offset.count,
        r.unexpected.count
    );
    let _ = writeln!(
        page,
        "<p>Read back: {} of the acknowledged messages, {} messages of unknown outcome, {} failed sends{}; {} acknowledged messages in partitions not read completely.</p>",
        r.acked_read,
        r.unknown_read,
        r.failed_read,
        if r.failed_read > 0 { " (a fail promised \"not written\")" } else { "" },
        r.unread
    );
    if !r.incomplete_partitions.is_empty() {
        let list: Vec<String> = r.incomplete_partitions.iter().map(u32::to_string).collect();
        let _ = writeln!(page, "<p class=\"bad\">Partitions not read completely: {}.</p>", list.join(", "));
    }
    page.push_str(
        "<table><tr><th>partition</th><th>acked</th><th>failed</th><th>unknown</th><th>records read</th><th>read to</th>\
         <th>complete</th><th>lost</th><th>unread</th><th>reordered</th><th>unknown read</th><th>failed read</th></tr>\n",
    );
    for (p, st) in &r.partitions {
        let _ = writeln!(
            page,
            "<tr><td>{p}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            st.acked,
            st.failed,
            st.unknown,
            st.records_read,
            st.read_end,
            if st.complete { "yes" } else { "<b>no</b>" },
            st.lost,
            st.unread,
            st.reordered,
            st.unknown_read,
            st.failed_read
        );
    }
    page.push_str("</table>\n");
    if let Some(topic) = &results.topic {
        let settle = &topic.settle;
        let _ = writeln!(
            page,
            "<h3>Partitions before the final read</h3>\n<p>{}</p>",
            match settle.settled_after_ms {
                Some(ms) => format!("Every replica in sync and caught up {ms} ms after the heal."),
                None => "Not every partition was settled (leader, full ISR, high watermark at the log end) within the harness's patience; read anyway.".into(),
            }
        );
        if let Some(e) = &settle.error {
            let _ = writeln!(page, "<p class=\"bad\">{}</p>", escape(e));
        }
        page.push_str("<table><tr><th>partition</th><th>leader</th><th>replicas</th><th>ISR</th><th>high watermark</th><th>log end</th></tr>\n");
        for p in &settle.partitions {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{:?}</td><td>{:?}</td><td>{}</td><td>{}</td></tr>",
                p.partition, p.leader, p.replicas, p.isr, p.high_watermark, p.log_end_offset
            );
        }
        page.push_str("</table>\n");
    }
    let message = |m: &Message| {
        format!(
            "{} (process {}, partition {}, {}{}, sent {:.3} s, done {:.3} s)",
            m.value,
            m.process,
            m.partition,
            escape(&m.outcome),
            m.acked_offset.map(|o| format!(" at offset {o}")).unwrap_or_default(),
            m.sent_s,
            m.completed_s
        )
    };
    let read_at = |at: &[(u32, u64)]| at.iter().map(|(p, o)| format!("{p}/{o}")).collect::<Vec<_>>().join(", ");
    findings_list(page, "Lost: acknowledged, never read", &r.lost, |m| message(m));
    findings_list(page, "Duplicated", &r.duplicated, |d| {
        format!("{} read at {}", message(&d.message), read_at(&d.read_at))
    });
    findings_list(page, "Reordered", &r.reordered, |o| {
        format!(
            "partition {}: {} read at offset {}, below {} read at offset {}, which was acknowledged before it was sent{}",
            o.partition,
            message(&o.later),
            o.later_read_offset,
            message(&o.earlier),
            o.earlier_read_offset,
            if o.same_producer { " (same producer)" } else { "" }
        )
    });
    findings_list(page, "Read at another offset than acknowledged", &r.wrong_offset, |w| {
        format!("{} read at {}", message(&w.message), read_at(&w.read_at))
    });
    findings_list(page, "Unexpected records", &r.unexpected, |u| {
        let value = serde_json::to_string(&u.value).unwrap_or_default();
        format!("{}/{}: {}", u.partition, u.offset, escape(&value))
    });
}

/// One kind of topic finding: a heading with its count (and how many are
/// shown) and a list of the examples, or nothing when there are none.
fn findings_list<T>(page: &mut String, title: &str, found: &Findings<T>, item: impl Fn(&T) -> String) {
    if found.count == 0 {
        return;
    }
    let shown = found.examples.len();
    let of = if found.count as usize > shown { format!(" (first {shown} of {})", found.count) } else { String::new() };
    let _ = writeln!(page, "<h3 class=\"bad\">{title}{of}</h3>\n<ul>");
    for e in &found.examples {
        let _ = writeln!(page, "<li>{}</li>", item(e));
    }
    page.push_str("</ul>\n");
}

fn stale_section(page: &mut String, stale: &crate::checker::stale_reads::StaleReadStats) {
    let _ = writeln!(
        page,
        "<h2>Stale reads</h2>\n<p>{} of {} successful reads ({:.2} %) returned a value older than a write acknowledged before the read started; staleness p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms.{}</p>",
        stale.stale,
        stale.reads,
        stale.fraction * 100.0,
        stale.staleness_ms.p50,
        stale.staleness_ms.p99,
        stale.staleness_ms.max,
        if stale.unversioned > 0 { format!(" {} reads had no version and were left out.", stale.unversioned) } else { String::new() }
    );
    if !stale.examples.is_empty() {
        page.push_str(
            "<table><tr><th>key</th><th>process</th><th>at (s)</th><th>read</th><th>newest acknowledged</th><th>staleness (ms)</th></tr>\n",
        );
        for e in &stale.examples {
            let read = match (e.value, e.version) {
                (None, _) => "absent".to_string(),
                (Some(v), Some(version)) => format!("{v} @ {version}"),
                (Some(v), None) => v.to_string(),
            };
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{}</td><td>{} @ {}</td><td>{:.1}</td></tr>",
                escape(&e.key),
                e.process,
                e.invoked_s,
                escape(&read),
                e.newest_acked_value,
                e.newest_acked_version,
                e.staleness_ms
            );
        }
        page.push_str("</table>\n");
    }
}

fn latency_table(page: &mut String, results: &Results) {
    if !results.latency_ms.is_empty() {
        page.push_str("<h2>Latency of ok operations (ms)</h2>\n<table><tr><th>f</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>\n");
        for (f, p) in &results.latency_ms {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td></tr>",
                escape(f),
                p.count,
                p.p50,
                p.p90,
                p.p99,
                p.max
            );
        }
        page.push_str("</table>\n");
    }
}

fn nemesis_section(page: &mut String, results: &Results) {
    let _ = writeln!(page, "<h2>Nemesis</h2>");
    if results.nemesis_windows.is_empty() {
        page.push_str("<p>No faults were injected.</p>\n");
    } else {
        page.push_str("<table><tr><th>start (s)</th><th>end (s)</th><th>fault</th></tr>\n");
        for w in &results.nemesis_windows {
            let _ = writeln!(
                page,
                "<tr><td>{:.2}</td><td>{}</td><td>{}</td></tr>",
                w.start_s,
                w.end_s.map_or("—".to_string(), |e| format!("{e:.2}")),
                escape(&w.description)
            );
        }
        page.push_str("</table>\n");
    }
    if !results.node_crashes.is_empty() {
        page.push_str("<p class=\"bad\">Nodes that exited without being killed:</p><ul>");
        for c in &results.node_crashes {
            let _ = write!(page, "<li>n{} ({}) noticed at {:.2} s</li>", c.node, escape(&c.status), c.noticed_s);
        }
        page.push_str("</ul>\n");
    }
}

fn config_section(page: &mut String, results: &Results) {
    let c = &results.config;
    let _ = writeln!(page, "<h2>Run</h2>\n<table>");
    let mut rows: Vec<(&str, String)> = vec![
        ("seed", c.seed.to_string()),
        ("nodes", format!("{} ({})", c.nodes, c.cluster)),
        ("concurrency", c.concurrency.to_string()),
    ];
    // Keys are the register workload's business.
    if results.workload == "register" {
        rows.push(("keys", format!("{} active, {} operations per key", c.keys, c.ops_per_key)));
    }
    rows.extend([
        ("rate", format!("{} ops/s", c.rate_hz)),
        ("time", format!("{} s", c.time_s)),
        ("operation timeout", format!("{} ms", c.op_timeout_ms)),
        ("fault / heal windows", format!("{} ms / {} ms", c.fault_interval_ms, c.heal_interval_ms)),
        ("kv", c.kv.clone()),
        ("kv serve extra args", c.serve_args.join(" ")),
        ("nftables table", c.firewall_table.clone().unwrap_or_else(|| "—".into())),
    ]);
    for (name, value) in rows {
        let _ = writeln!(page, "<tr><th>{}</th><td>{}</td></tr>", escape(name), escape(&value));
    }
    for (phase, s) in &results.timing_s {
        let _ = writeln!(page, "<tr><th>{} time</th><td>{s:.2} s</td></tr>", escape(phase));
    }
    page.push_str("</table>\n");
}

/// A linear time axis and the plot area.
struct Frame {
    t_max_s: f64,
}

impl Frame {
    fn x(&self, t_s: f64) -> f64 {
        LEFT + (t_s / self.t_max_s).clamp(0.0, 1.0) * (WIDTH - LEFT - RIGHT)
    }

    fn open(&self, svg: &mut String, y_label: &str) {
        let _ = write!(
            svg,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\">\
             <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{}\" height=\"{}\" fill=\"#fafafa\" stroke=\"#ccc\"/>\
             <text x=\"14\" y=\"{}\" transform=\"rotate(-90 14 {})\" class=\"axis\" text-anchor=\"middle\">{}</text>",
            WIDTH - LEFT - RIGHT,
            HEIGHT - TOP - BOTTOM,
            HEIGHT / 2.0,
            HEIGHT / 2.0,
            escape(y_label)
        );
    }

    fn windows(&self, svg: &mut String, windows: &[WindowReport]) {
        for w in windows {
            let x0 = self.x(w.start_s);
            let x1 = self.x(w.end_s.unwrap_or(self.t_max_s));
            let color = nemesis_color(&w.kind);
            let _ = write!(
                svg,
                "<rect x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{}\" fill=\"{color}\" fill-opacity=\"0.15\"><title>{}</title></rect>\
                 <text x=\"{:.1}\" y=\"{}\" class=\"wlabel\" fill=\"{color}\">{}</text>",
                (x1 - x0).max(1.0),
                HEIGHT - TOP - BOTTOM,
                escape(&w.description),
                x0 + 2.0,
                TOP + 10.0,
                escape(&w.kind)
            );
        }
    }

    fn time_axis(&self, svg: &mut String) {
        let step = nice_step(self.t_max_s / 10.0);
        let mut t = 0.0;
        while t <= self.t_max_s + 1e-9 {
            let x = self.x(t);
            let _ = write!(
                svg,
                "<line x1=\"{x:.1}\" y1=\"{}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#999\"/><text x=\"{x:.1}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
                HEIGHT - BOTTOM,
                HEIGHT - BOTTOM + 4.0,
                HEIGHT - BOTTOM + 16.0,
                trim_float(t)
            );
            t += step;
        }
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" class=\"axis\" text-anchor=\"middle\">time (s)</text>",
            LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
            HEIGHT - 4.0
        );
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude)
}

fn trim_float(v: f64) -> String {
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Keeps every fail/info first, then thins ok points evenly, to at most
/// [`POINTS_PER_CHART_MAX`].
fn sample(ops: &[ChartOp]) -> Vec<ChartOp> {
    let (ok, other): (Vec<ChartOp>, Vec<ChartOp>) = ops.iter().partition(|op| op.outcome == EventType::Ok);
    let thin = |points: Vec<ChartOp>, budget: usize| -> Vec<ChartOp> {
        if points.len() <= budget {
            return points;
        }
        let stride = points.len().div_ceil(budget.max(1));
        points.into_iter().step_by(stride).collect()
    };
    let other = thin(other, POINTS_PER_CHART_MAX / 2);
    let mut out = thin(ok, POINTS_PER_CHART_MAX - other.len());
    out.extend(other);
    out
}

fn latency_chart(ops: &[ChartOp], windows: &[WindowReport], t_max_s: f64) -> String {
    let frame = Frame { t_max_s };
    let latencies: Vec<f64> = ops.iter().map(|op| op.latency_ms().max(0.01)).collect();
    let max_ms = latencies.iter().copied().fold(1.0, f64::max);
    let min_ms = latencies.iter().copied().fold(f64::INFINITY, f64::min).min(1.0);
    let (lo, hi) = (min_ms.log10().floor(), max_ms.log10().ceil().max(min_ms.log10().floor() + 1.0));
    let y = |ms: f64| {
        let frac = (ms.max(0.01).log10() - lo) / (hi - lo);
        HEIGHT - BOTTOM - frac.clamp(0.0, 1.0) * (HEIGHT - TOP - BOTTOM)
    };
    let mut svg = String::new();
    frame.open(&mut svg, "latency (ms, log)");
    frame.windows(&mut svg, windows);
    let mut decade = lo;
    while decade <= hi + 1e-9 {
        let ms = 10f64.powf(decade);
        let yy = y(ms);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#e0e0e0\"/><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 4.0,
            yy + 4.0,
            trim_float(ms)
        );
        decade += 1.0;
    }
    for op in sample(ops) {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{}\" fill-opacity=\"0.6\"/>",
            frame.x(op.invoke_ns as f64 / 1e9),
            y(op.latency_ms()),
            outcome_color(op.outcome)
        );
    }
    frame.time_axis(&mut svg);
    svg.push_str("</svg>\n");
    svg
}

fn throughput_chart(ops: &[ChartOp], windows: &[WindowReport], t_max_s: f64) -> String {
    let frame = Frame { t_max_s };
    let bucket_s = nice_step(t_max_s / BUCKETS_TARGET as f64).max(0.1);
    let buckets = ((t_max_s / bucket_s).ceil() as usize).clamp(1, BUCKETS_MAX);
    let mut counts: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for op in ops {
        let series = match op.outcome {
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            _ => "info",
        };
        let i = ((op.complete_ns as f64 / 1e9 / bucket_s) as usize).min(buckets - 1);
        counts.entry(series).or_insert_with(|| vec![0.0; buckets])[i] += 1.0 / bucket_s;
    }
    let max_rate = counts.values().flatten().copied().fold(1.0, f64::max);
    let y_max = nice_step(max_rate / 4.0) * 4.0;
    let y = |rate: f64| HEIGHT - BOTTOM - (rate / y_max).clamp(0.0, 1.0) * (HEIGHT - TOP - BOTTOM);
    let mut svg = String::new();
    frame.open(&mut svg, "completions / s");
    frame.windows(&mut svg, windows);
    for i in 0..=4 {
        let rate = y_max * i as f64 / 4.0;
        let yy = y(rate);
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#e0e0e0\"/><text x=\"{}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            LEFT - 4.0,
            yy + 4.0,
            trim_float(rate)
        );
    }
    for (series, color) in [("ok", OK_COLOR), ("fail", FAIL_COLOR), ("info", INFO_COLOR)] {
        let Some(values) = counts.get(series) else { continue };
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, rate)| format!("{:.1},{:.1}", frame.x((i as f64 + 0.5) * bucket_s), y(*rate)))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
            points.join(" ")
        );
    }
    frame.time_axis(&mut svg);
    svg.push_str("</svg>\n");
    svg
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1000px;color:#222}\
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}h3{font-size:1em;margin-bottom:.2em}\
.verdict{display:inline-block;padding:.3em 1em;font-size:1.6em;font-weight:bold;color:#fff;border-radius:4px}\
.valid{background:#2ca02c}.invalid{background:#d62728}.unknown{background:#7f7f7f}\
.bad{color:#d62728}.legend{font-size:.9em}.sw{display:inline-block;width:.9em;height:.9em;margin:0 .3em 0 .6em;vertical-align:middle}\
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}\
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:.85em}\
.axis{font-size:10px;fill:#555}.wlabel{font-size:10px}";

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: text is escaped for HTML content and attributes.
    #[test]
    fn escapes() {
        assert_eq!(escape(r#"<a href="x">'&'</a>"#), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    // Proves: axis steps are 1, 2 or 5 times a power of ten, never below
    // what was asked.
    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.5), 2.0);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(6.0), 10.0);
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(trim_float(2.50), "2.5");
        assert_eq!(trim_float(10.0), "10");
    }
}
