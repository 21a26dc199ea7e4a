//! `summary.svg`: one small bar chart per metric, bars coloured by implementation (sizes for
//! the eBPF microbenchmark), whiskers from min to max, the median printed on each bar. A panel
//! whose values span more than a factor of [`LOG_SPAN`] uses a logarithmic axis (its title says
//! so). Hand-written SVG: no dependencies, readable in any browser.

use std::fmt::Write as _;

use super::Results;
use super::table::number;
use crate::bench::plan::{self, Better, Implementation, Metric, Scenario};

const PANEL_WIDTH: f64 = 250.0;
const PANEL_HEIGHT: f64 = 190.0;
const PANELS_PER_ROW: usize = 4;
const MARGIN: f64 = 20.0;
const LEGEND_HEIGHT: f64 = 56.0;
const SCENARIO_HEADING: f64 = 26.0;
/// Plot area inside a panel.
const PLOT_LEFT: f64 = 46.0;
const PLOT_TOP: f64 = 38.0;
const PLOT_BOTTOM: f64 = 26.0;
const PLOT_RIGHT: f64 = 10.0;
const LOG_SPAN: f64 = 20.0;

/// Okabe–Ito colours, distinguishable with the common colour-vision deficiencies.
fn colour(implementation: Implementation) -> &'static str {
    match implementation {
        Implementation::Plain => "#999999",
        Implementation::GatewaydEbpf => "#0072B2",
        Implementation::GatewaydEbpfSegments => "#009E73",
        Implementation::GatewaydUserspace => "#56B4E9",
        Implementation::WireguardGo => "#E69F00",
        Implementation::Boringtun => "#CC79A7",
        Implementation::NftablesNginx => "#D55E00",
    }
}

/// Packet sizes in the microbenchmark: shades of one hue, light to dark, none of them an
/// implementation's colour.
const SIZE_COLOURS: [&str; 4] = ["#a1d99b", "#41ab5d", "#006d2c", "#00441b"];

struct Bar {
    label: String,
    colour: &'static str,
    value: f64,
    min: f64,
    max: f64,
    /// A repetition was flagged (disturbed, sender-bound, no figure): marked † as in the table.
    flagged: bool,
}

struct Panel {
    title: String,
    unit: &'static str,
    better: Better,
    bars: Vec<Bar>,
    /// Labels under the bars (packet sizes); implementations go by colour and the legend.
    label_bars: bool,
}

pub fn render(results: &Results, scenarios: &[Scenario]) -> String {
    let rows: Vec<(Scenario, Vec<Panel>)> = scenarios
        .iter()
        .map(|&scenario| (scenario, panels(results, scenario)))
        .filter(|(_, panels)| !panels.is_empty())
        .collect();
    let width = MARGIN * 2.0 + PANEL_WIDTH * PANELS_PER_ROW as f64;
    let mut height = MARGIN + LEGEND_HEIGHT;
    for (_, panels) in &rows {
        height += SCENARIO_HEADING + PANEL_HEIGHT * panels.len().div_ceil(PANELS_PER_ROW) as f64;
    }
    height += MARGIN;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    legend(&mut svg);
    let mut top = MARGIN + LEGEND_HEIGHT;
    for (scenario, panels) in &rows {
        let _ = writeln!(
            svg,
            r#"<text x="{MARGIN}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
            top + 18.0,
            escape(scenario_title(*scenario))
        );
        top += SCENARIO_HEADING;
        for (index, panel) in panels.iter().enumerate() {
            let x = MARGIN + PANEL_WIDTH * (index % PANELS_PER_ROW) as f64;
            let y = top + PANEL_HEIGHT * (index / PANELS_PER_ROW) as f64;
            draw_panel(&mut svg, panel, x, y);
        }
        top += PANEL_HEIGHT * panels.len().div_ceil(PANELS_PER_ROW) as f64;
    }
    svg.push_str("</svg>\n");
    svg
}

fn scenario_title(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Direct => "direct: client ⇄ router ⇄ server",
        Scenario::Hub => "hub: phone → VPS → home → home-LAN host",
        Scenario::Scale => "scale (direct topology)",
        Scenario::EbpfMicro => "eBPF programs, BPF_PROG_TEST_RUN (by inner packet size)",
        Scenario::Entry => "entry: client → VPS's public address → forward → home (CGNAT) → NAS",
    }
}

fn legend(svg: &mut String) {
    let _ = writeln!(
        svg,
        r#"<text x="{MARGIN}" y="{}" font-size="16" font-weight="bold">gatewayd benchmark: median of repetitions, whiskers min–max, † flagged (disturbed or sender-bound)</text>"#,
        MARGIN + 4.0
    );
    let mut x = MARGIN;
    let y = MARGIN + 28.0;
    for implementation in Implementation::ALL {
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="{}" width="14" height="14" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            y - 11.0,
            colour(implementation),
            x + 19.0,
            y,
            implementation.name()
        );
        x += 30.0 + implementation.name().len() as f64 * 6.6;
    }
}

/// The table's breakdown of CPU time (daemons, softirq) stays out of the chart: the whole
/// machine's figure is the one to compare at a glance.
fn charted(metric: &Metric) -> bool {
    *metric != plan::DAEMON_CPU && *metric != plan::SOFTIRQ_CPU
}

fn panels(results: &Results, scenario: Scenario) -> Vec<Panel> {
    let metrics: Vec<Metric> = plan::metrics(scenario).iter().copied().filter(charted).collect();
    let metrics = metrics.as_slice();
    match scenario {
        Scenario::EbpfMicro => micro_panels(results, metrics),
        _ => metrics
            .iter()
            .filter_map(|metric| {
                let bars: Vec<Bar> = scenario
                    .implementations()
                    .iter()
                    .filter_map(|&implementation| {
                        let record = results.find(scenario, implementation, metric, None)?;
                        Some(Bar {
                            label: implementation.name().to_string(),
                            colour: colour(implementation),
                            value: record.value(),
                            min: record.reps.min,
                            max: record.reps.max,
                            flagged: !record.reps.flags.is_empty(),
                        })
                    })
                    .collect();
                (!bars.is_empty()).then(|| panel(metric, bars, false))
            })
            .collect(),
    }
}

fn micro_panels(results: &Results, metrics: &[Metric]) -> Vec<Panel> {
    metrics
        .iter()
        .filter_map(|metric| {
            let bars: Vec<Bar> = results
                .records
                .iter()
                .filter(|record| record.scenario == Scenario::EbpfMicro && record.metric == *metric)
                .enumerate()
                .map(|(index, record)| Bar {
                    label: record.variant.clone().unwrap_or_default(),
                    colour: SIZE_COLOURS[index % SIZE_COLOURS.len()],
                    value: record.value(),
                    min: record.reps.min,
                    max: record.reps.max,
                    flagged: !record.reps.flags.is_empty(),
                })
                .collect();
            (!bars.is_empty()).then(|| panel(metric, bars, true))
        })
        .collect()
}

fn panel(metric: &Metric, bars: Vec<Bar>, label_bars: bool) -> Panel {
    Panel {
        title: metric.label.to_string(),
        unit: metric.unit,
        better: metric.better,
        bars,
        label_bars,
    }
}

/// Maps values to heights in a panel's plot area.
enum Axis {
    Linear { max: f64 },
    Log { low: f64, high: f64 },
}

impl Axis {
    fn for_bars(bars: &[Bar]) -> Axis {
        let positives: Vec<f64> =
            bars.iter().flat_map(|bar| [bar.value, bar.max]).filter(|value| *value > 0.0).collect();
        let high = positives.iter().copied().fold(0.0, f64::max);
        let low = positives.iter().copied().fold(f64::INFINITY, f64::min);
        if high > 0.0 && high / low > LOG_SPAN {
            Axis::Log {
                low: 10f64.powf(low.log10().floor()),
                high: 10f64.powf(high.log10().ceil()),
            }
        } else {
            Axis::Linear { max: nice_ceiling(high.max(f64::MIN_POSITIVE)) }
        }
    }

    /// 0 at the baseline, 1 at the top.
    fn fraction(&self, value: f64) -> f64 {
        match *self {
            Axis::Linear { max } => (value / max).clamp(0.0, 1.0),
            Axis::Log { low, high } => {
                if value <= low {
                    0.0
                } else {
                    ((value / low).log10() / (high / low).log10()).clamp(0.0, 1.0)
                }
            }
        }
    }

    fn ticks(&self) -> Vec<f64> {
        match *self {
            Axis::Linear { max } => (0..=4).map(|step| max * f64::from(step) / 4.0).collect(),
            Axis::Log { low, high } => {
                let mut ticks = vec![low];
                while *ticks.last().unwrap_or(&high) < high * 0.999 {
                    let next = ticks.last().copied().unwrap_or(high) * 10.0;
                    ticks.push(next);
                }
                ticks
            }
        }
    }
}

/// The smallest 1, 2, 2.5 or 5 × 10^n at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value * 0.999_999)
        .unwrap_or(10.0 * magnitude)
}

fn draw_panel(svg: &mut String, panel: &Panel, x: f64, y: f64) {
    let axis = Axis::for_bars(&panel.bars);
    let plot_x = x + PLOT_LEFT;
    let plot_y = y + PLOT_TOP;
    let plot_width = PANEL_WIDTH - PLOT_LEFT - PLOT_RIGHT;
    let plot_height = PANEL_HEIGHT - PLOT_TOP - PLOT_BOTTOM;
    let direction = match panel.better {
        Better::Higher => "higher is better",
        Better::Lower => "lower is better",
    };
    let scale = if matches!(axis, Axis::Log { .. }) { ", log scale" } else { "" };
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" font-weight="bold">{}</text><text x="{}" y="{}" fill="#555" font-size="10">{} ({direction}{scale})</text>"##,
        x + 6.0,
        y + 14.0,
        escape(&panel.title),
        x + 6.0,
        y + 27.0,
        escape(panel.unit)
    );
    for tick in axis.ticks() {
        let tick_y = plot_y + plot_height * (1.0 - axis.fraction(tick));
        let _ = writeln!(
            svg,
            r##"<line x1="{plot_x}" y1="{tick_y:.1}" x2="{:.1}" y2="{tick_y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#555" font-size="9">{}</text>"##,
            plot_x + plot_width,
            plot_x - 4.0,
            tick_y + 3.0,
            number(tick)
        );
    }
    let slot = plot_width / panel.bars.len() as f64;
    let bar_width = (slot * 0.7).min(34.0);
    for (index, bar) in panel.bars.iter().enumerate() {
        let center = plot_x + slot * (index as f64 + 0.5);
        let top = plot_y + plot_height * (1.0 - axis.fraction(bar.value));
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{top:.1}" width="{bar_width:.1}" height="{:.1}" fill="{}"><title>{}: {} {}</title></rect>"#,
            center - bar_width / 2.0,
            plot_y + plot_height - top,
            bar.colour,
            escape(&bar.label),
            number(bar.value),
            escape(panel.unit)
        );
        let whisker_low = plot_y + plot_height * (1.0 - axis.fraction(bar.min));
        let whisker_high = plot_y + plot_height * (1.0 - axis.fraction(bar.max));
        if whisker_low - whisker_high > 1.0 {
            let _ = writeln!(
                svg,
                r##"<line x1="{center:.1}" y1="{whisker_low:.1}" x2="{center:.1}" y2="{whisker_high:.1}" stroke="#222"/><line x1="{:.1}" y1="{whisker_high:.1}" x2="{:.1}" y2="{whisker_high:.1}" stroke="#222"/>"##,
                center - 4.0,
                center + 4.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{center:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}{}</text>"#,
            top.min(whisker_high) - 3.0,
            number(bar.value),
            if bar.flagged { "†" } else { "" }
        );
        if panel.label_bars {
            let _ = writeln!(
                svg,
                r##"<text x="{center:.1}" y="{:.1}" text-anchor="middle" fill="#555" font-size="9">{}</text>"##,
                plot_y + plot_height + 12.0,
                escape(&bar.label)
            );
        }
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{plot_x}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
        plot_y + plot_height,
        plot_x + plot_width,
        plot_y + plot_height
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::output::Record;
    use crate::bench::plan::{MICRO_DECRYPT, TCP_1};
    use crate::bench::stats::Reps;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.9), 1.0);
        assert_eq!(nice_ceiling(1.3), 2.0);
        assert_eq!(nice_ceiling(2.2), 2.5);
        assert_eq!(nice_ceiling(69.4), 100.0);
        assert_eq!(nice_ceiling(450.0), 500.0);
    }

    #[test]
    fn wide_ranges_get_a_log_axis() {
        let bar = |value: f64| Bar {
            label: "x".into(),
            colour: "#000",
            value,
            min: value,
            max: value,
            flagged: false,
        };
        assert!(matches!(Axis::for_bars(&[bar(69.0), bar(1.4)]), Axis::Log { .. }));
        assert!(matches!(Axis::for_bars(&[bar(2.0), bar(1.4)]), Axis::Linear { .. }));
        let log = Axis::Log { low: 1.0, high: 100.0 };
        assert!((log.fraction(10.0) - 0.5).abs() < 1e-9);
        assert_eq!(log.ticks(), vec![1.0, 10.0, 100.0]);
    }

    #[test]
    fn renders_a_well_formed_document() {
        let reps =
            |value| Reps::new(vec![value * 0.9, value, value * 1.1], vec![], vec![]).unwrap();
        let results = Results {
            records: vec![
                Record {
                    scenario: Scenario::Direct,
                    implementation: Implementation::GatewaydEbpf,
                    metric: TCP_1,
                    variant: None,
                    reps: reps(3.0),
                },
                Record {
                    scenario: Scenario::EbpfMicro,
                    implementation: Implementation::GatewaydEbpf,
                    metric: MICRO_DECRYPT,
                    variant: Some("64B".into()),
                    reps: reps(300.0),
                },
            ],
            failures: vec![],
        };
        let svg = render(&results, &Scenario::ALL);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(
            svg.matches("<rect").count(),
            svg.matches("</rect>").count() + 1 + Implementation::ALL.len()
        );
        assert!(svg.contains("TCP 1 stream"));
        assert!(svg.contains(">64B</text>"));
        assert!(!svg.contains("hub: phone"), "no panels, no heading");
    }
}
