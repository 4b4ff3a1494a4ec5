//! A session on one time axis, drawn on the server as SVG: its requests as ticks coloured by
//! detection, and its peer's flows as bars from first to last packet.

use maud::{Markup, html};

use super::{css_name, span, time};

/// Flows drawn at most; the rest are counted.
const MAX_BARS: usize = 40;
const WIDTH: f64 = 720.0;
const TICK_LANE: f64 = 28.0;
/// A flow's row: its label, then its bar.
const ROW: f64 = 30.0;
const LABEL_HEIGHT: f64 = 13.0;
const BAR_HEIGHT: f64 = 9.0;

/// A request.
pub struct Tick {
    pub time: f64,
    /// Its detection: the tick's colour.
    pub class: String,
}

/// A flow.
pub struct Bar {
    pub start: f64,
    pub end: f64,
    pub label: String,
    pub link: Option<String>,
}

pub fn render(ticks: &[Tick], bars: &[Bar], from: f64, to: f64) -> Markup {
    let from = ticks
        .iter()
        .map(|tick| tick.time)
        .chain(bars.iter().map(|bar| bar.start))
        .fold(from, f64::min);
    let to = ticks
        .iter()
        .map(|tick| tick.time)
        .chain(bars.iter().map(|bar| bar.end))
        .fold(to, f64::max);
    let length = (to - from).max(1.0);
    let x = |t: f64| ((t - from) / length * WIDTH).clamp(0.0, WIDTH);
    let shown = &bars[..bars.len().min(MAX_BARS)];
    let height = TICK_LANE + shown.len() as f64 * ROW + 4.0;
    html! {
        figure.timeline {
            svg viewBox=(format!("0 0 {WIDTH} {height}")) role="img" aria-label="Requests and flows over time" {
                line.axis x1="0" y1=(TICK_LANE - 2.0) x2=(WIDTH) y2=(TICK_LANE - 2.0) {}
                @for tick in ticks {
                    line class=(format!("tick a-{}", css_name(&tick.class)))
                        x1=(x(tick.time)) x2=(x(tick.time)) y1="4" y2=(TICK_LANE - 4.0) {
                        title { (time(tick.time)) " " (tick.class) }
                    }
                }
                @for (index, bar) in shown.iter().enumerate() {
                    @let y = TICK_LANE + index as f64 * ROW;
                    @let (left, right) = (x(bar.start), x(bar.end));
                    @let rect = html! {
                        text.bar-label x=(left.min(WIDTH * 0.55)) y=(y + LABEL_HEIGHT) { (bar.label) }
                        rect.bar x=(left) y=(y + LABEL_HEIGHT + 3.0) width=((right - left).max(2.0)) height=(BAR_HEIGHT) {
                            title { (bar.label) " · " (time(bar.start)) " to " (time(bar.end)) }
                        }
                    };
                    @match &bar.link {
                        Some(link) => a href=(link) { (rect) },
                        None => (rect),
                    }
                }
            }
            figcaption {
                (time(from)) " to " (time(to)) " UTC (" (span(to - from)) "): "
                (ticks.len()) " requests above, " (bars.len()) " flows below"
                @if bars.len() > shown.len() { " (the first " (shown.len()) " drawn)" }
                "."
            }
        }
    }
}
