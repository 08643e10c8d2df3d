//! The results table and its JSON file.

use serde_json::{Value, json};

/// One figure beside its baseline.
pub struct Figure {
    name: String,
    value: f64,
    baseline_name: String,
    baseline: f64,
    /// Ratio value/baseline, when comparing them is the point.
    ratio: Option<f64>,
    /// What the figure must reach: a ratio (at least) or a limit (at most).
    target: Option<Target>,
}

enum Target {
    AtLeastRatio(f64),
    AtMost(f64),
}

impl Figure {
    /// A figure whose ratio to its baseline has a target of at least
    /// `target`.
    pub fn ratio(name: &str, value: f64, baseline: f64, baseline_name: &str, target: f64) -> Self {
        Self {
            name: name.into(),
            value,
            baseline_name: baseline_name.into(),
            baseline,
            ratio: Some(value / baseline),
            target: Some(Target::AtLeastRatio(target)),
        }
    }

    /// A latency beside the baseline's, ms.
    pub fn latency(name: &str, value: f64, baseline: f64) -> Self {
        Self {
            name: name.into(),
            value,
            baseline_name: "baseline".into(),
            baseline,
            ratio: Some(value / baseline),
            target: None,
        }
    }

    /// A figure that must stay at most `limit`.
    pub fn limit(name: &str, value: f64, baseline: f64, baseline_name: &str, limit: f64) -> Self {
        Self {
            name: name.into(),
            value,
            baseline_name: baseline_name.into(),
            baseline,
            ratio: None,
            target: Some(Target::AtMost(limit)),
        }
    }

    /// Two related figures, no target.
    pub fn plain(name: &str, value: f64, other_name: &str, other: f64) -> Self {
        Self {
            name: name.into(),
            value,
            baseline_name: other_name.into(),
            baseline: other,
            ratio: None,
            target: None,
        }
    }

    fn verdict(&self) -> &'static str {
        match (&self.target, self.ratio) {
            (Some(Target::AtLeastRatio(t)), Some(r)) if r >= *t => "met",
            (Some(Target::AtLeastRatio(_)), _) => "MISSED",
            (Some(Target::AtMost(limit)), _) if self.value <= *limit => "met",
            (Some(Target::AtMost(_)), _) => "MISSED",
            (None, _) => "",
        }
    }

    fn target_text(&self) -> String {
        match &self.target {
            Some(Target::AtLeastRatio(t)) => format!(">= {t}x"),
            Some(Target::AtMost(limit)) => format!("<= {limit}"),
            None => String::new(),
        }
    }
}

/// Every figure of a run.
#[derive(Default)]
pub struct Report {
    figures: Vec<Figure>,
}

impl Report {
    /// Adds a figure.
    pub fn push(&mut self, figure: Figure) {
        eprintln!(
            "  {}: {:.2} ({}: {:.2})",
            figure.name, figure.value, figure.baseline_name, figure.baseline
        );
        self.figures.push(figure);
    }

    /// Prints the table.
    pub fn print(&self) {
        println!(
            "| figure | value | baseline | baseline value | ratio | target | |\n|---|---|---|---|---|---|---|"
        );
        for f in &self.figures {
            println!(
                "| {} | {:.2} | {} | {:.2} | {} | {} | {} |",
                f.name,
                f.value,
                f.baseline_name,
                f.baseline,
                f.ratio.map(|r| format!("{r:.2}x")).unwrap_or_default(),
                f.target_text(),
                f.verdict()
            );
        }
    }

    /// Writes the figures as JSON.
    pub fn write(&self, path: &str) {
        let figures: Vec<Value> = self
            .figures
            .iter()
            .map(|f| {
                json!({
                    "name": f.name, "value": f.value,
                    "baseline_name": f.baseline_name, "baseline": f.baseline,
                    "ratio": f.ratio, "target": f.target_text(), "verdict": f.verdict(),
                })
            })
            .collect();
        let document = json!({
            "recorded_at": std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            "machine": std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(str::to_owned)),
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "figures": figures,
        });
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&document).unwrap()).unwrap();
        eprintln!("written to {}", path.display());
    }
}
