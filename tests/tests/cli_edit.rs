//! `ddim edit …`, `ddim lineage` and `ddim ls --parent` against a real `ddimd serve` on
//! 127.0.0.1:0 with a tiny random-weight model (1×32×32): every edit once with --wait
//! --json, the new ids and their lineage, the client's own checks (a bad mix expression,
//! a malformed rectangle, a grid cell outside the grid) and the daemon's validation as
//! one line, variation at strength 0 giving x_T back exactly, previews storing nothing.
//!
//! Needs the binaries built first (`cargo build -p ddim -p ddimd --bins`); the daemon
//! comes from the shared fixture in `ddim_tests`.

use ddim_tests::cli::{s, Ddim};
use ddim_tests::Daemon;
use serde_json::Value;

/// The new latents of a finished job's JSON.
fn new_ids(job: &Value) -> Vec<String> {
    assert_eq!(job["state"], "done", "{job}");
    job["result"]["latent_ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no latent ids: {job}"))
        .iter()
        .map(|v| s(v).to_string())
        .collect()
}

/// The ids of `ddim lineage --json`'s parents.
fn parent_ids(lineage: &Value) -> Vec<String> {
    lineage["parents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| s(&p["id"]).to_string())
        .collect()
}

/// `ddim export ID x.npy`'s float32 values.
fn xt(d: &Ddim, id: &str) -> Vec<f32> {
    let path = d.d.dir.path().join(format!("{id}.npy"));
    let exp = d.json(&["export", id, path.to_str().unwrap()]);
    assert_eq!(exp["shape"], serde_json::json!([1, 1, 32, 32]), "{exp}");
    let (_, values) = ddim_tests::npy_values(&std::fs::read(&path).unwrap());
    assert_eq!(values.len(), 1024);
    values
}

#[tokio::test]
async fn edits_from_scripts_with_lineage() {
    let daemon = Daemon::builder().start().await;
    let d = Ddim { d: &daemon };
    d.wait_ready(None);
    let ids = new_ids(&d.json(&[
        "sample", "--count", "3", "--seed", "1", "--steps", "3", "--wait",
    ]));
    assert_eq!(ids.len(), 3);
    let (a, b, c) = (ids[0].as_str(), ids[1].as_str(), ids[2].as_str());

    // variation: two latents, named and tagged, whose lineage names the parent
    let v = d.json(&[
        "edit",
        "variation",
        a,
        "--strength",
        "0.3",
        "--count",
        "2",
        "--seed",
        "5",
        "--preview-steps",
        "3",
        "--name",
        "var",
        "--tag",
        "from",
        "--wait",
    ]);
    assert_eq!(v["kind"], "variation");
    assert_eq!(v["spec"]["variation"]["out"]["tags"][0], "from", "{v}");
    let var = new_ids(&v);
    assert_eq!(var.len(), 2, "{v}");
    let show = d.json(&["show", &var[1]]);
    assert_eq!(
        (&show["origin"], &show["name"], &show["preview_steps"]),
        (&"edited".into(), &"var-1".into(), &3.into()),
        "{show}"
    );
    assert_eq!(show["lineage"]["parent_ids"][0], a, "{show}");
    let lin = d.json(&["lineage", &var[0]]);
    assert_eq!(lin["id"], var[0].as_str());
    assert_eq!(lin["op"], "variation", "{lin}");
    assert_eq!(lin["params"]["strength"].as_f64(), Some(0.3f32 as f64));
    assert_eq!(parent_ids(&lin), [a]);
    assert_eq!(lin["parents"][0]["origin"], "sampled", "{lin}");
    assert!(lin["parents"][0]["parents"].as_array().unwrap().is_empty());

    // strength 0 gives the parent's x_T back exactly; export works on edited latents
    let same = new_ids(&d.json(&[
        "edit",
        "variation",
        a,
        "--strength",
        "0",
        "--preview-steps",
        "2",
        "--wait",
    ]));
    let (xa, x0) = (xt(&d, a), xt(&d, &same[0]));
    assert!(
        xa.iter().zip(&x0).all(|(p, q)| p.to_bits() == q.to_bits()),
        "strength 0 changed x_T"
    );
    // …and strength 0.3 does change it
    assert_ne!(xt(&d, &var[0]), xa);

    // ls --parent: the direct children only
    let ls = d.json(&["ls", "--parent", a]);
    assert_eq!(ls["total"], 3, "{ls}");
    let mut listed: Vec<String> = ls["latents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| s(&l["id"]).to_string())
        .collect();
    listed.sort();
    let mut want = vec![var[0].clone(), var[1].clone(), same[0].clone()];
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(d.json(&["ls", "--parent", b])["total"], 0);

    // mix: parsed client-side, terms and expression sent, three parents
    let expr = format!("{a} + 0.8*({b} - {c})");
    let m = d.json(&[
        "edit",
        "mix",
        &expr,
        "--tag",
        "to",
        "--preview-steps",
        "2",
        "--wait",
    ]);
    let terms: Vec<(String, f64)> = m["spec"]["mix"]["terms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                s(&t["latent_id"]).to_string(),
                t["weight"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        terms,
        [(a.into(), 1.0), (b.into(), 0.8), (c.into(), -0.8)],
        "{m}"
    );
    assert_eq!(m["spec"]["mix"]["expression"], expr.as_str());
    let mixed = new_ids(&m);
    assert_eq!(mixed.len(), 1);
    assert_eq!(parent_ids(&d.json(&["lineage", &mixed[0]])), [a, b, c]);
    // a bad expression: usage error naming the column, nothing submitted
    let err = d.fails(&["edit", "mix", &format!("{a} + * {b}")], 2);
    assert!(err.contains("column") && err.contains("mix"), "{err}");
    d.fails(&["edit", "mix", "2 + 3"], 2);
    // an unknown latent: not found (exit 3), the daemon's field, one line
    let err = d.fails(&["edit", "mix", &format!("{a} - lat-99999")], 3);
    assert!(err.contains("mix.terms[1]"), "{err}");

    // direction: "from" (the variations) → "to" (the mix), one latent per weight
    let dir = d.json(&[
        "edit",
        "direction",
        b,
        "--from-tag",
        "from",
        "--to-tag",
        "to",
        "--weight",
        "0.5,1,1.5",
        "--preview-steps",
        "2",
        "--wait",
    ]);
    assert_eq!(
        dir["spec"]["direction"]["weights"],
        serde_json::json!([0.5, 1.0, 1.5])
    );
    let moved = new_ids(&dir);
    assert_eq!(moved.len(), 3);
    let lin = d.json(&["lineage", &moved[2]]);
    assert_eq!(
        (parent_ids(&lin), &lin["op"]),
        (vec![b.to_string()], &"direction".into())
    );
    let err = d.fails(
        &[
            "edit",
            "direction",
            b,
            "--from-tag",
            "none",
            "--to-tag",
            "to",
        ],
        1,
    );
    assert!(err.contains("direction.from_tag"), "{err}");

    // renoise from a PNG file: image bytes, no parent, named after the file
    let png = daemon.dir.path().join("shoe.png");
    d.json(&["export", a, png.to_str().unwrap()]);
    let r = d.json(&[
        "edit",
        "renoise",
        png.to_str().unwrap(),
        "--strength",
        "0.5",
        "--eta",
        "1",
        "--seed",
        "3",
        "--count",
        "2",
        "--steps",
        "4",
        "--preview-steps",
        "2",
        "--wait",
    ]);
    // (the job keeps the image's name; its bytes are not echoed back)
    assert_eq!(
        r["spec"]["renoise"]["input"]["image_name"],
        png.to_str().unwrap(),
        "{r}"
    );
    let renoised = new_ids(&r);
    assert_eq!(renoised.len(), 2);
    let lin = d.json(&["lineage", &renoised[0]]);
    assert!(parent_ids(&lin).is_empty(), "{lin}");
    assert!(s(&lin["summary"]).contains("shoe.png"), "{lin}");
    // …and from a latent id, its images written with --out-dir
    let out_dir = daemon.dir.path().join("renoise");
    let r = d.json(&[
        "edit",
        "renoise",
        a,
        "--strength",
        "0.4",
        "--steps",
        "3",
        "--perturb",
        "0.2",
        "--eta",
        "0",
        "--preview-steps",
        "2",
        "--out-dir",
        out_dir.to_str().unwrap(),
    ]);
    let one = new_ids(&r);
    assert_eq!(parent_ids(&d.json(&["lineage", &one[0]])), [a]);
    assert!(std::fs::read(out_dir.join(format!("{}.png", one[0])))
        .unwrap()
        .starts_with(b"\x89PNG"));
    assert_eq!(r["files"].as_array().unwrap().len(), 1, "{r}");
    // a file that is not there is not taken for a latent id
    let err = d.fails(&["edit", "renoise", "missing/shoe.png"], 1);
    assert!(err.contains("missing/shoe.png"), "{err}");
    let err = d.fails(&["edit", "renoise", a, "--strength", "1.5"], 1);
    assert!(err.contains("renoise.strength"), "{err}");

    // inpaint: two rectangles on a latent
    let ip = d.json(&[
        "edit",
        "inpaint",
        a,
        "--rect",
        "0,0,16,16",
        "--rect",
        "16,16,8,8",
        "--seed",
        "2",
        "--steps",
        "3",
        "--preview-steps",
        "2",
        "--wait",
    ]);
    assert_eq!(
        ip["spec"]["inpaint"]["rects"],
        serde_json::json!([[0, 0, 16, 16], [16, 16, 8, 8]])
    );
    let painted = new_ids(&ip);
    assert_eq!(painted.len(), 1);
    let lin = d.json(&["lineage", &painted[0]]);
    assert_eq!(
        (parent_ids(&lin), &lin["op"]),
        (vec![a.to_string()], &"inpaint".into())
    );
    // a malformed rectangle is a usage error; one outside the image the daemon's, by field
    let err = d.fails(&["edit", "inpaint", a, "--rect", "1,2,3"], 2);
    assert!(err.contains("--rect"), "{err}");
    let err = d.fails(&["edit", "inpaint", a, "--rect", "30,30,8,8"], 1);
    assert!(err.contains("inpaint.rects[0]"), "{err}");
    let err = d.fails(&["edit", "inpaint", a, "--rect", "0,0,0,4"], 1);
    assert!(err.contains("inpaint.rects[0]"), "{err}");

    // grid: 3×3, cells (0, 1) and (2, 2) saved, every cell written
    let grid_dir = daemon.dir.path().join("grid");
    let g = d.json(&[
        "edit",
        "grid",
        a,
        b,
        c,
        &var[0],
        "--size",
        "3",
        "--save",
        "0,1",
        "--save",
        "2,2",
        "--preview-steps",
        "2",
        "--out-dir",
        grid_dir.to_str().unwrap(),
    ]);
    assert_eq!(g["spec"]["grid"]["save"], serde_json::json!([1, 8]), "{g}");
    let cells = new_ids(&g);
    assert_eq!(cells.len(), 2);
    let frames = g["result"]["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 9);
    assert_eq!(frames[8]["latent_id"], cells[1].as_str());
    assert_eq!(g["files"].as_array().unwrap().len(), 9);
    assert!(grid_dir.join("grid_2_1.png").exists());
    let lin = d.json(&["lineage", &cells[0]]);
    assert_eq!(parent_ids(&lin), [a, b, c, var[0].as_str()]);
    // the corner that is itself a variation shows its own parent
    assert_eq!(parent_ids(&lin["parents"][3]), [a]);
    let err = d.fails(
        &["edit", "grid", a, b, c, a, "--size", "3", "--save", "0,3"],
        1,
    );
    assert!(err.contains("3×3"), "{err}");
    let text = d.text(&[
        "edit", "grid", a, b, c, a, "--size", "2", "--save", "1,0", "--wait",
    ]);
    assert!(text.contains("cell (1, 0)  latent lat-"), "{text}");

    // --preview: images back, nothing stored
    let before = d.json(&["ls"])["total"].clone();
    let p = d.json(&["edit", "variation", a, "--count", "2", "--preview=2"]);
    assert_eq!(p["preview"], true, "{p}");
    assert_eq!(p["images"].as_array().unwrap().len(), 2);
    assert_eq!(p["images"][0]["width"], 32);
    let pdir = daemon.dir.path().join("preview");
    let p = d.json(&[
        "edit",
        "inpaint",
        a,
        "--rect",
        "4,4,8,8",
        "--preview=3",
        "--out-dir",
        pdir.to_str().unwrap(),
    ]);
    assert_eq!(p["files"].as_array().unwrap().len(), 1, "{p}");
    assert!(pdir.join("preview_0.png").exists());
    assert_eq!(d.json(&["ls"])["total"], before);

    // lineage of a root: no parents, its children listed; human output is a tree
    let lin = d.json(&["lineage", a]);
    assert!(lin["parents"].as_array().unwrap().is_empty());
    let children: Vec<&str> = lin["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| s(&l["id"]))
        .collect();
    for id in [&var[0], &same[0], &mixed[0], &painted[0], &cells[0]] {
        assert!(children.contains(&id.as_str()), "{id} in {children:?}");
    }
    // a deleted parent stays in the lineage, marked
    d.json(&["rm", c]);
    let lin = d.json(&["lineage", &mixed[0]]);
    assert_eq!(lin["parents"][2]["id"], c);
    assert_eq!(lin["parents"][2]["deleted"], true, "{lin}");
    assert_eq!(lin["parents"][0]["deleted"], false, "{lin}");
    let text = d.text(&["lineage", &mixed[0]]);
    assert!(
        text.contains(&format!("└─ {c} (deleted)")) && text.contains(&format!("├─ {a}")),
        "{text}"
    );
    let text = d.text(&["show", &mixed[0]]);
    assert!(
        text.contains("edit:     mix")
            && text.contains(&format!("parents:  {a}, {b}, {c} (deleted)")),
        "{text}"
    );
    d.fails(&["lineage", "lat-99999"], 3);
}
