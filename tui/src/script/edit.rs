//! `ddim edit …` (variation, mix, direction, renoise, inpaint, grid; `--preview` runs
//! PreviewEdit instead of submitting) and `ddim lineage ID`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

use ddim_proto::v1::{self as pb, job_spec::Kind};
use serde_json::{json, Value};

use super::{is_npy, submit, write_png, Output};
use crate::cli::{EditArgs, EditOp};
use crate::client::{Client, ClientError, ErrorKind};
use crate::format;
use crate::json;

/// Most latents `ddim lineage` fetches for the ancestry tree.
const MAX_LINEAGE_NODES: usize = 1000;

/// What an image-space edit (renoise, inpaint) starts from.
enum Source {
    Latent(String),
    Image { data: Vec<u8>, name: String },
}

/// `ID|FILE`: an existing file is sent as image bytes (named as typed), anything that
/// looks like a file but is not there is an error, the rest is a latent id.
fn source(input: &str) -> Result<Source, ClientError> {
    let path = Path::new(input);
    if path.is_file() {
        let data = std::fs::read(path)
            .map_err(|e| ClientError::new(ErrorKind::Other, format!("cannot read {input}: {e}")))?;
        if is_npy(path, &data) {
            return Err(ClientError::new(
                ErrorKind::Invalid,
                format!(
                    "{input} is a .npy array, not a PNG or JPEG image: bring x_T into the \
                     library with `ddim import {input}` and edit that latent"
                ),
            ));
        }
        // The daemon names results and errors after it: the path as typed, or the file
        // name when the path is too long for a name.
        let name = if input.len() <= 200 {
            input.to_string()
        } else {
            path.file_name()
                .map(|n| n.to_string_lossy().chars().take(200).collect())
                .unwrap_or_default()
        };
        return Ok(Source::Image { data, name });
    }
    let looks_like_file = input.contains('/')
        || input.contains('\\')
        || path.extension().is_some_and(|e| {
            ["png", "jpg", "jpeg", "npy"]
                .iter()
                .any(|x| e.eq_ignore_ascii_case(x))
        });
    if looks_like_file {
        let why = if path.exists() {
            "not a file"
        } else {
            "no such file"
        };
        return Err(ClientError::new(
            ErrorKind::Other,
            format!("cannot read {input}: {why} (give a latent id or a PNG/JPEG file)"),
        ));
    }
    Ok(Source::Latent(input.to_string()))
}

/// Builds the job spec of an edit (checks what the client can check first).
fn spec(op: EditOp) -> Result<Kind, ClientError> {
    let out = |a: &EditArgs| pb::EditOutput {
        preview_steps: a.preview_steps.unwrap_or(0),
        spacing: a.spacing.pb(),
        name: a.name.clone().unwrap_or_default(),
        tags: a.tags.clone(),
    };
    Ok(match op {
        EditOp::Variation {
            id,
            strength,
            count,
            seed,
            edit,
        } => Kind::Variation(pb::VariationJob {
            latent_id: id,
            strength,
            seed,
            count,
            out: Some(out(&edit)),
        }),
        EditOp::Mix { expr, radius, edit } => Kind::Mix(pb::MixJob {
            terms: expr
                .terms
                .iter()
                .map(|(id, w)| pb::MixTerm {
                    latent_id: id.clone(),
                    weight: *w,
                })
                .collect(),
            expression: expr.text,
            out: Some(out(&edit)),
            radius: radius.pb(),
        }),
        EditOp::Direction {
            id,
            from_tag,
            to_tag,
            weight,
            radius,
            edit,
        } => Kind::Direction(pb::DirectionJob {
            latent_id: id,
            from_tag,
            to_tag,
            weights: weight.0,
            out: Some(out(&edit)),
            radius: radius.pb(),
        }),
        EditOp::Renoise {
            input,
            strength,
            eta,
            seed,
            count,
            steps,
            perturb,
            edit,
        } => {
            let (input, image_name) = match source(&input)? {
                Source::Latent(id) => (pb::renoise_job::Input::LatentId(id), String::new()),
                Source::Image { data, name } => (pb::renoise_job::Input::Image(data), name),
            };
            Kind::Renoise(pb::RenoiseJob {
                input: Some(input),
                image_name,
                strength,
                sampler: Some(pb::SamplerOptions {
                    steps,
                    eta,
                    spacing: edit.spacing.pb(),
                    sigma_hat: false,
                    solver: 0,
                }),
                seed,
                count,
                perturb,
                out: Some(out(&edit)),
            })
        }
        EditOp::Inpaint {
            input,
            rects,
            seed,
            eta,
            steps,
            count,
            edit,
        } => {
            let (input, image_name) = match source(&input)? {
                Source::Latent(id) => (pb::inpaint_job::Input::LatentId(id), String::new()),
                Source::Image { data, name } => (pb::inpaint_job::Input::Image(data), name),
            };
            Kind::Inpaint(pb::InpaintJob {
                input: Some(input),
                image_name,
                rects: rects
                    .iter()
                    .map(|r| pb::Rect {
                        x: r.x,
                        y: r.y,
                        width: r.width,
                        height: r.height,
                    })
                    .collect(),
                sampler: Some(pb::SamplerOptions {
                    steps,
                    eta,
                    spacing: edit.spacing.pb(),
                    sigma_hat: false,
                    solver: 0,
                }),
                seed,
                count,
                out: Some(out(&edit)),
            })
        }
        EditOp::Grid {
            corners,
            size,
            save,
            edit,
        } => {
            let mut cells = vec![];
            for c in &save {
                if size >= 2 && (c.row >= size || c.col >= size) {
                    return Err(ClientError::new(
                        ErrorKind::Invalid,
                        format!(
                            "--save {},{}: not a cell of the {size}×{size} grid (rows and columns \
                             0..={})",
                            c.row,
                            c.col,
                            size - 1
                        ),
                    ));
                }
                let cell = c.row.saturating_mul(size).saturating_add(c.col);
                if cells.contains(&cell) {
                    return Err(ClientError::new(
                        ErrorKind::Invalid,
                        format!("--save {},{} is given twice", c.row, c.col),
                    ));
                }
                cells.push(cell);
            }
            Kind::Grid(pb::GridJob {
                corners,
                size,
                save: cells,
                preview_steps: 0,
                out: Some(out(&edit)),
            })
        }
    })
}

/// `ddim edit OP …`: submits the edit (or previews it with `--preview`), waits when
/// asked (or when `--out-dir` needs the images) and writes them.
pub async fn edit(c: &Client, op: EditOp, show_progress: bool) -> Result<Output, ClientError> {
    let args = op.args().clone();
    let spec = spec(op)?;
    if let Some(steps) = args.preview {
        return preview(c, spec, steps, args.out_dir.as_deref()).await;
    }
    let mut wait = args.wait;
    wait.wait |= args.out_dir.is_some();
    let mut out = submit(c, spec, wait, show_progress).await?;
    if let Some(dir) = &args.out_dir {
        out = write_results(c, dir, out).await?;
    }
    Ok(out)
}

fn create_dir(dir: &Path) -> Result<(), ClientError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        ClientError::new(
            ErrorKind::Other,
            format!("cannot create {}: {e}", dir.display()),
        )
    })
}

/// A finished edit's images into `dir`: DIR/<latent id>.png per new latent, or for a
/// grid every cell as DIR/grid_<row>_<col>.png.
async fn write_results(c: &Client, dir: &Path, mut out: Output) -> Result<Output, ClientError> {
    let id = out.json["id"].as_str().unwrap_or_default().to_string();
    let job = c.get_job(&id).await?;
    create_dir(dir)?;
    let mut files: Vec<PathBuf> = vec![];
    let r = job.result.unwrap_or_default();
    if job.kind == "grid" {
        let n = (r.frames.len() as f64).sqrt().round().max(1.0) as u32;
        for f in &r.frames {
            let Some(img) = &f.image else { continue };
            let path = dir.join(format!("grid_{}_{}.png", f.index / n, f.index % n));
            write_png(&path, &img.png)?;
            files.push(path);
        }
    } else {
        for (lid, img) in r.latent_ids.iter().zip(&r.images) {
            let path = dir.join(format!("{lid}.png"));
            write_png(&path, &img.png)?;
            files.push(path);
        }
    }
    for f in &files {
        out.human.push_str(&format!("wrote {}\n", f.display()));
    }
    out.json["files"] = json!(files);
    Ok(out)
}

/// `--preview[=S]`: PreviewEdit, nothing stored; the images go to `dir` when given.
async fn preview(
    c: &Client,
    spec: Kind,
    steps: u32,
    dir: Option<&Path>,
) -> Result<Output, ClientError> {
    let op = json::spec(&pb::JobSpec {
        kind: Some(spec.clone()),
    })
    .as_object()
    .and_then(|o| o.keys().next().cloned())
    .unwrap_or_default();
    let r = c.preview_edit(spec, steps, "").await?;
    let mut human = format!(
        "preview of {op} at S={steps}: {} image{} in {:.2}s (nothing stored)\n",
        r.images.len(),
        if r.images.len() == 1 { "" } else { "s" },
        r.seconds
    );
    let mut files = vec![];
    if let Some(dir) = dir {
        create_dir(dir)?;
        for (i, img) in r.images.iter().enumerate() {
            let path = dir.join(format!("preview_{i}.png"));
            write_png(&path, &img.png)?;
            human.push_str(&format!("wrote {}\n", path.display()));
            files.push(path);
        }
    } else {
        human.push_str("(--out-dir DIR writes them as PNGs)\n");
    }
    Ok(Output {
        human,
        json: json!({
            "preview": true,
            "op": op,
            "steps": steps,
            "seconds": r.seconds,
            "images": r.images.iter().map(|i| json!({"width": i.width, "height": i.height, "png_bytes": i.png.len()})).collect::<Vec<_>>(),
            "files": files,
        }),
    })
}

/// `ddim lineage ID`: the ancestry tree (parents fetched one by one, deleted ones
/// marked) and the direct children.
pub async fn lineage(c: &Client, id: &str) -> Result<Output, ClientError> {
    let root = c.get_latent(id).await?;
    // Every ancestor once (a grid of grids shares them), breadth first.
    let mut known: HashMap<String, Option<pb::Latent>> = HashMap::new();
    let mut queue: VecDeque<String> = parents(&root).into_iter().map(|(p, _)| p).collect();
    for (p, deleted) in parents(&root) {
        if deleted {
            known.insert(p, None);
        }
    }
    while let Some(p) = queue.pop_front() {
        if known.contains_key(&p) || known.len() >= MAX_LINEAGE_NODES {
            continue;
        }
        let l = match c.get_latent(&p).await {
            Ok(l) => Some(l),
            // Deleted between the two calls (or never known to this daemon).
            Err(e) if e.kind == ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(l) = &l {
            for (q, deleted) in parents(l) {
                if deleted {
                    known.entry(q).or_insert(None);
                } else if !known.contains_key(&q) {
                    queue.push_back(q);
                }
            }
        }
        known.insert(p, l);
    }
    let children = all_children(c, &root.id).await?;

    let mut human = format!("{}\n", node_line(&root));
    let mut seen = HashSet::from([root.id.clone()]);
    tree_lines(&root, &known, &mut seen, "", &mut human);
    if children.is_empty() {
        human.push_str("no latents edited from it\n");
    } else {
        human.push_str(&format!("edited from it ({}):\n", children.len()));
        for ch in &children {
            human.push_str(&format!("  {}\n", node_line(ch)));
        }
    }
    let mut seen = HashSet::from([root.id.clone()]);
    let mut doc = node_json(&root, &known, &mut seen);
    doc["children"] = json!(children.iter().map(json::latent).collect::<Vec<_>>());
    Ok(Output { human, json: doc })
}

/// A latent's parents with whether each is deleted (none unless edited).
fn parents(l: &pb::Latent) -> Vec<(String, bool)> {
    json::edited(l)
        .map(|e| {
            e.parent_ids
                .iter()
                .map(|p| (p.clone(), e.deleted_parent_ids.contains(p)))
                .collect()
        })
        .unwrap_or_default()
}

/// `lat-7  "name"  variation of lat-3, strength 0.3, seed 1`.
fn node_line(l: &pb::Latent) -> String {
    format!(
        "{}  \"{}\"  {}",
        l.id,
        format::fit(&l.name, 40),
        format::origin_detail(l)
    )
}

/// The parents of `l` as `├─`/`└─` branches under `indent`; a latent already shown
/// is named, not expanded again.
fn tree_lines(
    l: &pb::Latent,
    known: &HashMap<String, Option<pb::Latent>>,
    seen: &mut HashSet<String>,
    indent: &str,
    out: &mut String,
) {
    let ps = parents(l);
    for (i, (p, deleted)) in ps.iter().enumerate() {
        let last = i + 1 == ps.len();
        let (branch, more) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        match known.get(p) {
            Some(Some(pl)) if !deleted => {
                if !seen.insert(p.clone()) {
                    out.push_str(&format!("{indent}{branch}{p} (shown above)\n"));
                    continue;
                }
                out.push_str(&format!("{indent}{branch}{}\n", node_line(pl)));
                tree_lines(pl, known, seen, &format!("{indent}{more}"), out);
            }
            Some(_) => out.push_str(&format!("{indent}{branch}{p} (deleted)\n")),
            None => out.push_str(&format!("{indent}{branch}{p} (not fetched)\n")),
        }
    }
}

/// A node of `ddim lineage --json`: the latent, its lineage and its parents as nodes.
fn node_json(
    l: &pb::Latent,
    known: &HashMap<String, Option<pb::Latent>>,
    seen: &mut HashSet<String>,
) -> Value {
    let e = json::edited(l);
    let mut ps = vec![];
    for (p, deleted) in parents(l) {
        let v = match known.get(&p) {
            Some(Some(pl)) if !deleted => {
                if seen.insert(p.clone()) {
                    node_json(pl, known, seen)
                } else {
                    json!({"id": p, "deleted": false, "shown_above": true})
                }
            }
            Some(_) => json!({"id": p, "deleted": true}),
            None => json!({"id": p, "deleted": false, "not_fetched": true}),
        };
        ps.push(v);
    }
    json!({
        "id": l.id,
        "name": l.name,
        "origin": format::origin_kind(l),
        "origin_detail": format::origin_detail(l),
        "created_unix_ms": l.created_unix_ms,
        "deleted": false,
        "op": e.map(|e| e.op.clone()),
        "summary": e.map(|e| e.summary.clone()),
        "params": e.map(json::params),
        "parent_ids": e.map(|e| e.parent_ids.clone()).unwrap_or_default(),
        "deleted_parent_ids": e.map(|e| e.deleted_parent_ids.clone()).unwrap_or_default(),
        "parents": ps,
    })
}

/// Every latent edited directly from `id`, oldest first.
async fn all_children(c: &Client, id: &str) -> Result<Vec<pb::Latent>, ClientError> {
    let mut out = vec![];
    let mut token = String::new();
    loop {
        let r = c
            .list_latents(pb::ListLatentsRequest {
                page_size: 1000,
                page_token: token,
                parent: id.to_string(),
                order_by: pb::SortOrder::Oldest as i32,
                ..Default::default()
            })
            .await?;
        out.extend(r.latents);
        token = r.next_page_token;
        if token.is_empty() || out.len() >= 100_000 {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edited(id: &str, parents: &[&str], deleted: &[&str]) -> pb::Latent {
        pb::Latent {
            id: id.into(),
            name: format!("n-{id}"),
            origin: Some(pb::Origin {
                kind: Some(pb::origin::Kind::Edited(pb::EditedOrigin {
                    op: "mix".into(),
                    params_json: r#"{"w":1}"#.into(),
                    parent_ids: parents.iter().map(|p| p.to_string()).collect(),
                    deleted_parent_ids: deleted.iter().map(|p| p.to_string()).collect(),
                    summary: format!("mix of {}", parents.join(", ")),
                })),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_tree_marks_deleted_and_repeated_parents() {
        let root = edited("lat-9", &["lat-5", "lat-6", "lat-2"], &["lat-2"]);
        let sampled = pb::Latent {
            id: "lat-1".into(),
            origin: Some(pb::Origin {
                kind: Some(pb::origin::Kind::Sampled(pb::SampledOrigin {
                    seed: 7,
                    index: 0,
                })),
            }),
            ..Default::default()
        };
        let known = HashMap::from([
            ("lat-5".to_string(), Some(edited("lat-5", &["lat-1"], &[]))),
            ("lat-6".to_string(), Some(edited("lat-6", &["lat-1"], &[]))),
            ("lat-1".to_string(), Some(sampled)),
            ("lat-2".to_string(), None),
        ]);
        let mut s = String::new();
        tree_lines(&root, &known, &mut HashSet::new(), "", &mut s);
        let lines: Vec<&str> = s.lines().collect();
        assert!(
            lines[0].starts_with("├─ lat-5  \"n-lat-5\"  mix of lat-1"),
            "{s}"
        );
        assert!(
            lines[1].starts_with("│  └─ lat-1  \"\"  sampled seed 7 #0"),
            "{s}"
        );
        assert!(lines[2].starts_with("├─ lat-6"), "{s}");
        assert_eq!(lines[3], "│  └─ lat-1 (shown above)", "{s}");
        assert_eq!(lines[4], "└─ lat-2 (deleted)", "{s}");
        let v = node_json(&root, &known, &mut HashSet::new());
        assert_eq!(v["parents"][0]["parents"][0]["id"], "lat-1");
        assert_eq!(v["parents"][0]["params"]["w"], 1);
        assert_eq!(v["parents"][2]["deleted"], true);
        assert_eq!(v["deleted_parent_ids"][0], "lat-2");
    }

    #[test]
    fn sources_are_files_or_ids() {
        assert!(matches!(source("lat-3").unwrap(), Source::Latent(id) if id == "lat-3"));
        let e = source("missing/shoe.png").err().unwrap();
        assert!(e.message.contains("no such file"), "{}", e.message);
        assert!(source("shoe.jpg").is_err());
        let dir = std::env::temp_dir().join(format!("ddim-edit-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let png = dir.join("a.png");
        std::fs::write(&png, b"\x89PNG....").unwrap();
        let p = png.to_str().unwrap();
        assert!(
            matches!(source(p).unwrap(), Source::Image { name, data } if name == p && data.len() == 8)
        );
        let npy = dir.join("x.npy");
        std::fs::write(&npy, b"\x93NUMPY").unwrap();
        assert!(source(npy.to_str().unwrap())
            .err()
            .unwrap()
            .message
            .contains("ddim import"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn grid_cells_are_row_major_and_checked() {
        use crate::cli::{CellArg, EditArgs, SpacingArg, WaitArgs};
        let args = EditArgs {
            preview_steps: None,
            spacing: SpacingArg::Uniform,
            name: None,
            tags: vec![],
            out_dir: None,
            preview: None,
            wait: WaitArgs { wait: false },
        };
        let grid = |save: Vec<CellArg>| EditOp::Grid {
            corners: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            size: 3,
            save,
            edit: args.clone(),
        };
        let Kind::Grid(g) = spec(grid(vec![
            CellArg { row: 1, col: 2 },
            CellArg { row: 0, col: 0 },
        ]))
        .unwrap() else {
            panic!()
        };
        assert_eq!(g.save, vec![5, 0]);
        let e = spec(grid(vec![CellArg { row: 0, col: 3 }])).err().unwrap();
        assert!(e.message.contains("3×3"), "{}", e.message);
        let e = spec(grid(vec![
            CellArg { row: 1, col: 1 },
            CellArg { row: 1, col: 1 },
        ]))
        .err()
        .unwrap();
        assert!(e.message.contains("twice"), "{}", e.message);
    }
}
