//! `cptlab compare --plot FILE.{svg,png}` and `--plot-curves FILE.{svg,png}` on a real (tiny,
//! synthetic-data) sweep: the files exist, are well-formed (PNG decodes, SVG parses as XML) and
//! show every group; `--json` carries the same figures as the table; a bad extension is refused
//! before anything is written.
mod common;

use std::path::Path;

use common::Home;

const SWEEP: &str = r#"
name = "plots"
seeds = 2
[set]
"data.source" = "synthetic:256:64"
"train.batch_size" = 32
"train.epochs" = 2
"train.log_every" = 2
"devices.threads" = 1
[axes]
"precision.schedule.kind" = ["static", "CR"]
"#;

fn sweep(home: &Home) -> String {
    let p = home.dir.path().join("plots.toml");
    std::fs::write(&p, SWEEP).unwrap();
    common::run_ok(home, &["sweep", p.to_str().unwrap(), "--json"]);
    home.runs().join("plots").to_str().unwrap().to_string()
}

fn compare(home: &Home, args: &[&str]) -> std::process::Output {
    home.cmd().arg("compare").args(args).output().unwrap()
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn svg_texts(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{}: not XML: {e}", path.display()));
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants()
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_string())
        .collect()
}

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let img = image::load_from_memory(&bytes).unwrap();
    // Something was drawn: not one colour throughout.
    let rgb = img.to_rgb8();
    let first = rgb.get_pixel(0, 0);
    assert!(
        rgb.pixels().any(|p| p != first),
        "{}: blank",
        path.display()
    );
    (img.width(), img.height())
}

#[test]
fn plots_as_svg_and_png_with_every_group() {
    let home = Home::new();
    let dir = sweep(&home);
    let out = home.dir.path();
    let (scatter_svg, scatter_png) = (out.join("acc.svg"), out.join("acc.png"));
    let (curves_svg, curves_png) = (out.join("curves.svg"), out.join("curves.png"));
    let md = ok(&compare(
        &home,
        &[
            &dir,
            "--baseline",
            "static",
            "--md",
            "--plot",
            scatter_svg.to_str().unwrap(),
            "--plot-curves",
            curves_png.to_str().unwrap(),
        ],
    ));
    assert!(
        md.contains("| precision.schedule.kind=static | 2 |"),
        "{md}"
    );
    ok(&compare(
        &home,
        &[
            &dir,
            "--plot",
            scatter_png.to_str().unwrap(),
            "--plot-curves",
            curves_svg.to_str().unwrap(),
        ],
    ));
    for p in [&scatter_svg, &curves_svg] {
        let texts = svg_texts(p);
        for label in [
            "precision.schedule.kind=static",
            "precision.schedule.kind=CR",
        ] {
            assert!(
                texts.iter().any(|t| t == label),
                "{}: no {label} in {texts:?}",
                p.display()
            );
        }
    }
    assert_eq!(png_size(&scatter_png), (900, 560));
    assert_eq!(png_size(&curves_png), (1200, 520));
    // The curves: one band (a polygon) per group, over 2 seeds each.
    let curves = std::fs::read_to_string(&curves_svg).unwrap();
    assert!(curves.matches("<polygon").count() >= 2, "no bands drawn");

    // JSON: the same groups, numbers as fractions; CR is cheaper than static.
    let json: serde_json::Value = serde_json::from_str(&ok(&compare(
        &home,
        &[&dir, "--json", "--baseline", "static"],
    )))
    .unwrap();
    assert_eq!(json["baseline"], "precision.schedule.kind=static");
    let groups = json["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    let cr = &groups[1];
    assert_eq!(cr["label"], "precision.schedule.kind=CR");
    assert_eq!(cr["final_acc"]["n"], 2);
    assert!(cr["gbitops_ratio"]["mean"].as_f64().unwrap() < 1.0, "{cr}");
    assert_eq!(cr["delta_final_vs_baseline"]["n"], 2);
}

#[test]
fn a_plot_with_an_unknown_extension_is_refused_naming_it() {
    let home = Home::new();
    let dir = sweep(&home);
    let bad = home.dir.path().join("plot.jpg");
    let table = home.dir.path().join("table.md");
    let out = compare(
        &home,
        &[
            &dir,
            "--plot-curves",
            bad.to_str().unwrap(),
            "--md",
            "-o",
            table.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("plot.jpg") && err.contains(".svg or .png"),
        "{err}"
    );
    assert!(!bad.exists() && !table.exists(), "nothing is written");
}
