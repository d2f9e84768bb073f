//! The scripting subcommands (`ddim ls`, `ddim show`, …): human output by default,
//! one JSON document with `--json`, and exit codes 0 ok, 2 usage, 3 not found,
//! 4 daemon unreachable, 1 anything else.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use ddim_proto::v1::{self as pb, job_event::Event, job_spec::Kind};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::cli::{Command, WaitArgs};
use crate::client::{Client, ClientError, ErrorKind};
use crate::format::{self, short_id};
use crate::json;

mod edit;

/// What a command prints: a text for people and a JSON document for machines.
pub struct Output {
    pub human: String,
    pub json: Value,
}

/// Runs one subcommand and returns the process exit code.
pub async fn run(client: Client, command: Command, as_json: bool) -> i32 {
    match execute(&client, command, as_json).await {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            let text = if as_json {
                serde_json::to_string_pretty(&out.json).unwrap_or_default()
            } else {
                out.human
            };
            let _ = writeln!(stdout, "{}", text.trim_end());
            0
        }
        Err(e) => {
            eprintln!("ddim: {}", e.message.lines().next().unwrap_or(""));
            e.exit_code()
        }
    }
}

async fn execute(c: &Client, command: Command, as_json: bool) -> Result<Output, ClientError> {
    let show_progress = !as_json && std::io::stdout().is_terminal();
    match command {
        Command::Ls {
            name,
            tag,
            origin,
            sort,
            offset,
            limit,
            parent,
        } => {
            let f = pb::ListLatentsRequest {
                name_contains: name.unwrap_or_default(),
                tag: tag.unwrap_or_default(),
                // A unique prefix names its kind, as in the TUI's filter.
                origin: format::resolve_origin(&origin.unwrap_or_default()),
                order_by: sort.order_by() as i32,
                offset,
                parent: parent.unwrap_or_default(),
                ..Default::default()
            };
            ls(c, f, limit).await
        }
        Command::Show { id } => {
            let l = c.get_latent(&id).await?;
            Ok(Output {
                human: latent_details(&l),
                json: json::latent(&l),
            })
        }
        Command::Encode {
            files,
            steps,
            spacing,
            solver,
            tags,
            wait,
        } => {
            let mut images = Vec::new();
            for f in &files {
                let input = encode_input(f, &tags)?;
                if is_npy(f, &input.data) {
                    return Err(ClientError::new(
                        ErrorKind::Invalid,
                        format!(
                            "{} is a .npy array, not a PNG or JPEG image: x_T files go into the \
                             library with `ddim import {}`",
                            f.display(),
                            f.display()
                        ),
                    ));
                }
                images.push(input);
            }
            let spec = |images| {
                Kind::Encode(pb::EncodeJob {
                    images,
                    steps,
                    spacing: spacing.pb(),
                    preview_steps: 0,
                    solver: solver.pb(),
                })
            };
            if images.len() <= MAX_JOB_ITEMS {
                return submit(c, spec(images), wait, show_progress)
                    .await
                    .map_err(|e| name_files(e, "encode.images", &files));
            }
            // More images than one job takes: a job per 256.
            let mut outs = vec![];
            for (chunk, names) in images
                .chunks(MAX_JOB_ITEMS)
                .zip(files.chunks(MAX_JOB_ITEMS))
            {
                let out = submit(c, spec(chunk.to_vec()), wait, show_progress).await;
                outs.push(out.map_err(|e| name_files(e, "encode.images", names))?);
            }
            Ok(jobs_output(outs))
        }
        Command::Import {
            files,
            steps,
            tags,
            wait,
        } => {
            let latents = files
                .iter()
                .map(|f| import_input(f, &tags))
                .collect::<Result<Vec<_>, _>>()?;
            let spec = Kind::Import(pb::ImportJob {
                latents,
                preview_steps: steps,
                spacing: 0,
            });
            submit(c, spec, wait, show_progress)
                .await
                .map_err(|e| name_files(e, "import.latents", &files))
        }
        Command::Sample {
            count,
            seed,
            steps,
            eta,
            spacing,
            sigma_hat,
            solver,
            wait,
        } => {
            let spec = Kind::Sample(pb::SampleJob {
                count,
                seed,
                sampler: Some(pb::SamplerOptions {
                    steps,
                    eta,
                    spacing: spacing.pb(),
                    sigma_hat,
                    solver: solver.pb(),
                }),
                name_prefix: String::new(),
                tags: vec![],
            });
            submit(c, spec, wait, show_progress).await
        }
        Command::Eval {
            samples,
            steps,
            eta,
            sigma_hat,
            spacing,
            solver,
            seed,
            wait,
        } => {
            let spec = Kind::Eval(pb::EvalJob {
                steps: steps.0,
                etas: eta.0,
                sigma_hat,
                spacing: spacing.pb(),
                samples,
                seed,
                solver: solver.pb(),
            });
            submit(c, spec, wait, show_progress).await
        }
        Command::Reconstruct {
            mut ids,
            steps,
            spacing,
            solver,
            wait,
        } => {
            if ids.len() > MAX_JOB_ITEMS {
                let (sp, so) = (spacing.pb(), solver.pb());
                return reconstruct_in_chunks(c, ids, steps.0, sp, so, show_progress).await;
            }
            let input = if ids.len() == 1 {
                pb::reconstruct_job::Input::LatentId(ids.remove(0))
            } else {
                pb::reconstruct_job::Input::Latents(pb::LatentIdList { ids })
            };
            let spec = Kind::Reconstruct(pb::ReconstructJob {
                input: Some(input),
                steps: steps.0,
                spacing: spacing.pb(),
                solver: solver.pb(),
            });
            submit(c, spec, wait, show_progress).await
        }
        Command::Interpolate {
            a,
            b,
            frames,
            steps,
            method,
            spacing,
            save,
            only_saved,
            solver,
            wait,
        } => {
            let method = if method == "lerp" {
                pb::InterpolationMethod::Lerp
            } else {
                pb::InterpolationMethod::Slerp
            };
            let spec = Kind::Interpolate(pb::InterpolateJob {
                a,
                b,
                frames,
                method: method as i32,
                sampler: Some(pb::SamplerOptions {
                    steps,
                    spacing: spacing.pb(),
                    solver: solver.pb(),
                    ..Default::default()
                }),
                save_frames: save.map(|s| s.0).unwrap_or_default(),
                only_saved_frames: only_saved,
            });
            submit(c, spec, wait, show_progress).await
        }
        Command::Edit { op } => edit::edit(c, op, show_progress).await,
        Command::Lineage { id } => edit::lineage(c, &id).await,
        Command::Reencode {
            ids,
            other_models,
            steps,
            tags,
            wait,
        } => {
            let ids = if other_models {
                other_model_latents(c).await?
            } else {
                ids
            };
            if ids.is_empty() {
                return Ok(Output {
                    human: "nothing to re-encode: every latent is of the daemon's model \
                            (or re-encoded for it already)\n"
                        .into(),
                    json: json!({ "jobs": [] }),
                });
            }
            let spec = |latent_ids: &[String]| {
                Kind::Reencode(pb::ReencodeJob {
                    latent_ids: latent_ids.to_vec(),
                    steps,
                    out: Some(pb::EditOutput {
                        tags: tags.clone(),
                        ..Default::default()
                    }),
                })
            };
            // A job per 256 latents; the JSON is `{"jobs": [...]}` however many there
            // are (none when nothing is left to carry over), so scripts need one shape.
            let mut outs = vec![];
            for chunk in ids.chunks(MAX_JOB_ITEMS) {
                outs.push(submit(c, spec(chunk), wait, show_progress).await?);
            }
            Ok(jobs_output(outs))
        }
        Command::Jobs { limit, kind } => {
            let jobs = c.list_jobs_of(limit, "", &kind).await?;
            Ok(Output {
                human: jobs_table(&jobs, format::now_ms()),
                json: json!({ "jobs": jobs.iter().map(json::job).collect::<Vec<_>>() }),
            })
        }
        Command::Daemons => {
            let st = c.stats().await?;
            let now = format::now_ms();
            Ok(Output {
                human: daemons_table(&st, now),
                json: json!({
                    "shared": !st.daemons.is_empty(),
                    "queued": if st.daemons.is_empty() { st.queued } else { st.shared_queued },
                    "max_queue": st.max_queue,
                    "daemons": st.daemons.iter().map(|d| json!({
                        "id": d.id,
                        "address": d.address,
                        "device": d.device,
                        "fingerprint": d.fingerprint,
                        "running_job_id": (!d.running_job_id.is_empty()).then_some(&d.running_job_id),
                        "heartbeat_unix_ms": d.heartbeat_unix_ms,
                        "started_unix_ms": d.started_unix_ms,
                    })).collect::<Vec<_>>(),
                }),
            })
        }
        Command::Job { job } => {
            let j = c.get_job(&job).await?;
            Ok(Output {
                human: job_detail(&j),
                json: json::job(&j),
            })
        }
        Command::Watch { job } => {
            let j = c.get_job(&job).await?;
            let j = wait_for(c, j, show_progress).await?;
            finished_output(j)
        }
        Command::Cancel { job } => {
            let j = c.cancel(&job).await?;
            Ok(Output {
                human: format!("job {} is {}", j.id, format::state_name(j.state)),
                json: json::job(&j),
            })
        }
        Command::Decode {
            id,
            steps,
            eta,
            seed,
            spacing,
            out_dir,
            solver,
            mut wait,
        } => {
            let etas = eta.0;
            let spec = Kind::Decode(pb::DecodeJob {
                latent_id: id,
                steps: steps.0,
                eta: etas[0],
                spacing: spacing.pb(),
                seed,
                etas: if etas.len() > 1 { etas } else { vec![] },
                solver: solver.pb(),
            });
            wait.wait |= out_dir.is_some();
            let mut out = submit(c, spec, wait, show_progress).await?;
            if let Some(dir) = out_dir {
                out = write_decodes(c, &dir, out).await?;
            }
            Ok(out)
        }
        Command::Export { id, out, steps } => {
            if out
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("npy"))
            {
                if steps.is_some() {
                    return Err(ClientError::new(
                        ErrorKind::Invalid,
                        "--steps decodes an image: it goes with a .png, not a .npy (x_T)",
                    ));
                }
                let r = c.export_latent(&id).await?;
                write_png(&out, &r.npy)?;
                // The shape the file holds (numpy.load's), not the latent's [C, H, W].
                let latent_shape = r.latent.map(|l| l.shape).unwrap_or_default();
                let shape = npy_shape(&r.npy).unwrap_or_else(|| {
                    std::iter::once(1)
                        .chain(latent_shape.iter().map(|&d| d as usize))
                        .collect()
                });
                return Ok(Output {
                    human: format!(
                        "wrote x_T of {id} to {} (float32, shape {})",
                        out.display(),
                        numpy_shape(&shape)
                    ),
                    json: json!({"path": out, "latent_id": id, "shape": shape, "latent_shape": latent_shape, "bytes": r.npy.len()}),
                });
            }
            let (kind, s) = match steps {
                Some(s) => (pb::LatentImageKind::Decode, s),
                None => (pb::LatentImageKind::Preview, 0),
            };
            let img = c.latent_image(&id, kind, s).await?;
            write_png(&out, &img.png)?;
            Ok(Output {
                human: format!("wrote {} ({}×{})", out.display(), img.width, img.height),
                json: json!({"path": out, "width": img.width, "height": img.height, "latent_id": id}),
            })
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut crate::cli::Cli::command(), "ddim", &mut out);
            let script = String::from_utf8_lossy(&out).into_owned();
            Ok(Output {
                json: json!({ "shell": shell.to_string(), "script": script }),
                human: script,
            })
        }
        Command::Rm { id } => {
            let r = c.delete(&id).await?;
            Ok(Output {
                human: format!("deleted {id} ({} jobs deleted with it)", r.jobs_deleted),
                json: json!({"id": id, "deleted": true, "jobs_deleted": r.jobs_deleted}),
            })
        }
    }
}

/// Reads an image file into an `EncodeInput` named after the file stem.
pub fn encode_input(path: &Path, tags: &[String]) -> Result<pb::EncodeInput, ClientError> {
    let data = std::fs::read(path).map_err(|e| {
        ClientError::new(
            ErrorKind::Other,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(pb::EncodeInput {
        data,
        name,
        tags: tags.to_vec(),
    })
}

/// A `.npy` array (by its name or its magic bytes): x_T to import, not an image.
pub fn is_npy(path: &Path, data: &[u8]) -> bool {
    data.starts_with(b"\x93NUMPY") || crate::worker::is_npy(path)
}

/// A daemon error about one input of a job (`encode.images[3].data`,
/// `import.latents[0].name`) names the file given for it instead: `files[i]` is what
/// `field[i]` was read from.
pub fn name_files(mut e: ClientError, field: &str, files: &[std::path::PathBuf]) -> ClientError {
    // Highest index first, so `[1]` never eats the start of `[12]`… (the `]` already
    // prevents that, but the order keeps it obvious).
    for (i, f) in files.iter().enumerate().rev() {
        let key = format!("{field}[{i}]");
        if !e.message.contains(&key) {
            continue;
        }
        let path = f.display().to_string();
        for (what, with) in [
            (format!("{key}.data"), path.clone()),
            (format!("{key}.npy"), path.clone()),
            (format!("{key}.name"), format!("the name of {path}")),
            (format!("{key}.tags"), format!("the tags of {path}")),
            (key.clone(), path.clone()),
        ] {
            e.message = e.message.replace(&what, &with);
        }
    }
    e
}

/// Reads an x_T `.npy` into an `ImportInput` named after the file stem.
pub fn import_input(path: &Path, tags: &[String]) -> Result<pb::ImportInput, ClientError> {
    let pb::EncodeInput { data, name, tags } = encode_input(path, tags)?;
    Ok(pb::ImportInput {
        npy: data,
        name,
        tags,
    })
}

/// The shape in a `.npy` header (`'shape': (1, 1, 32, 32)`), if it has one.
pub fn npy_shape(npy: &[u8]) -> Option<Vec<usize>> {
    let head = npy.get(..npy.len().min(4096))?;
    let head = String::from_utf8_lossy(head);
    let rest = &head[head.find("'shape':")? + 8..];
    // The first ')' after the '(' (a ')' before it is no tuple, not a panic).
    let rest = &rest[rest.find('(')? + 1..];
    let inner = &rest[..rest.find(')')?];
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().ok())
        .collect()
}

/// A shape as numpy prints it: `(1, 1, 32, 32)`, `(5,)`.
pub fn numpy_shape(dims: &[usize]) -> String {
    match dims {
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            dims.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Writes bytes (a PNG or a .npy) to `path`, with a one-line error.
pub fn write_png(path: &Path, png: &[u8]) -> Result<(), ClientError> {
    std::fs::write(path, png).map_err(|e| {
        ClientError::new(
            ErrorKind::Other,
            format!("cannot write {}: {e}", path.display()),
        )
    })
}

/// The most images or latents one encode or reconstruct job takes (the daemon's limit).
const MAX_JOB_ITEMS: usize = 256;

/// More latents than one job takes: one job per 256 (they queue and run one after
/// another), waited for, and their per-image errors merged into one table, exactly as
/// one job would have reported it.
async fn reconstruct_in_chunks(
    c: &Client,
    ids: Vec<String>,
    steps: Vec<u32>,
    spacing: i32,
    solver: i32,
    show_progress: bool,
) -> Result<Output, ClientError> {
    let mut jobs = vec![];
    for chunk in ids.chunks(MAX_JOB_ITEMS) {
        let spec = Kind::Reconstruct(pb::ReconstructJob {
            input: Some(pb::reconstruct_job::Input::Latents(pb::LatentIdList {
                ids: chunk.to_vec(),
            })),
            steps: steps.clone(),
            spacing,
            solver,
        });
        jobs.push(c.submit(spec).await?);
    }
    let mut done = vec![];
    for j in jobs {
        let j = wait_for(c, j, show_progress).await?;
        if j.state != pb::JobState::Done as i32 {
            // The same one-line error as a single job's.
            return finished_output(j);
        }
        done.push(j);
    }
    let points = merge_reconstructions(&done);
    let mut merged = done[0].clone();
    merged.result = Some(pb::JobResult {
        reconstruction: points.clone(),
        ..Default::default()
    });
    let mut human = result_summary(&merged);
    human = human.replacen(
        &format!("job {} (reconstruct) done", merged.id),
        &format!("{} reconstruct jobs done", done.len()),
        1,
    );
    Ok(Output {
        human,
        json: json!({
            "jobs": done.iter().map(json::job).collect::<Vec<_>>(),
            "reconstruction": points
                .iter()
                .map(|p| json!({"steps": p.steps, "mse": p.mse, "mse_sem": p.mse_sem, "images": p.images, "image_mse": p.image_mse}))
                .collect::<Vec<_>>(),
        }),
    })
}

/// Per S, all jobs' per-image errors in input order, with their mean and standard error.
pub fn merge_reconstructions(jobs: &[pb::Job]) -> Vec<pb::ReconstructionPoint> {
    let mut out: Vec<pb::ReconstructionPoint> = vec![];
    for p in jobs
        .iter()
        .filter_map(|j| j.result.as_ref())
        .flat_map(|r| &r.reconstruction)
    {
        match out.iter_mut().find(|q| q.steps == p.steps) {
            Some(q) => q.image_mse.extend(&p.image_mse),
            None => out.push(pb::ReconstructionPoint {
                steps: p.steps,
                image_mse: p.image_mse.clone(),
                ..Default::default()
            }),
        }
    }
    for q in &mut out {
        let e = ddim_proto::stats::error_stats(&q.image_mse);
        q.images = q.image_mse.len() as u32;
        (q.mse, q.mse_sem) = (e.mean, e.sem);
    }
    out
}

/// Writes a finished decode job's images into `dir` (made if missing) and lists them
/// in the output.
async fn write_decodes(c: &Client, dir: &Path, mut out: Output) -> Result<Output, ClientError> {
    let id = out.json["id"].as_str().unwrap_or_default().to_string();
    let job = c.get_job(&id).await?;
    std::fs::create_dir_all(dir).map_err(|e| {
        ClientError::new(
            ErrorKind::Other,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let mut files = vec![];
    for d in job.result.iter().flat_map(|r| &r.decodes) {
        let Some(img) = &d.image else { continue };
        let path = dir.join(format!("decode_S{}_eta{}.png", d.steps, d.eta));
        write_png(&path, &img.png)?;
        out.human.push_str(&format!("wrote {}\n", path.display()));
        files.push(path);
    }
    out.json["files"] = json!(files);
    Ok(out)
}

/// The library's latents of another model than the daemon's, of its image shape, that
/// have no re-encode for the daemon's model yet (oldest first).
async fn other_model_latents(c: &Client) -> Result<Vec<String>, ClientError> {
    let model = c.model_info().await?;
    let mut all = vec![];
    let mut token = String::new();
    loop {
        let resp = c
            .list_latents(pb::ListLatentsRequest {
                page_size: 1000,
                page_token: token,
                order_by: pb::SortOrder::Oldest as i32,
                ..Default::default()
            })
            .await?;
        all.extend(resp.latents);
        token = resp.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    let carried: std::collections::HashSet<&str> = all
        .iter()
        .filter(|l| l.model_fingerprint == model.fingerprint)
        .filter_map(|l| match l.origin.as_ref()?.kind.as_ref()? {
            pb::origin::Kind::Edited(e) if e.op == "reencode" => Some(&e.parent_ids),
            _ => None,
        })
        .flatten()
        .map(String::as_str)
        .collect();
    Ok(all
        .iter()
        .filter(|l| l.model_fingerprint != model.fingerprint && l.shape == model.sample_shape)
        .filter(|l| !carried.contains(l.id.as_str()))
        .map(|l| l.id.clone())
        .collect())
}

/// `ddim ls`: `f` without paging fields, `limit` latents from its offset on.
async fn ls(c: &Client, f: pb::ListLatentsRequest, limit: usize) -> Result<Output, ClientError> {
    let mut latents = Vec::new();
    let mut token = String::new();
    let mut total;
    loop {
        let resp = c
            .list_latents(pb::ListLatentsRequest {
                page_size: (limit - latents.len()).clamp(1, 1000) as u32,
                page_token: token,
                ..f.clone()
            })
            .await?;
        total = resp.total;
        latents.extend(resp.latents);
        token = resp.next_page_token;
        if token.is_empty() || latents.len() >= limit {
            break;
        }
    }
    latents.truncate(limit);
    let mut human = format!(
        "{:<36}  {:<20} {:<16} {:<12} {:<8} {:>5}  {}\n",
        "ID", "NAME", "TAGS", "ORIGIN", "MODEL", "S", "CREATED"
    );
    for l in &latents {
        // Name and tags are cut to their columns (with …), so a column never runs into the
        // next one; --json has them whole.
        human.push_str(&format!(
            "{:<36}  {} {} {:<12} {:<8} {:>5}  {}\n",
            l.id,
            format::column(&l.name, 20),
            format::column(&l.tags.join(","), 16),
            format::origin_kind(l),
            short_id(&l.model_fingerprint),
            l.encode_steps,
            format::timestamp(l.created_unix_ms)
        ));
    }
    if f.offset > 0 {
        human.push_str(&format!(
            "{} of {} latents, from offset {}\n",
            latents.len(),
            total,
            f.offset
        ));
    } else {
        human.push_str(&format!("{} of {} latents\n", latents.len(), total));
    }
    Ok(Output {
        human,
        json: json!({
            "total": total,
            "offset": f.offset,
            "latents": latents.iter().map(json::latent).collect::<Vec<_>>(),
        }),
    })
}

fn latent_details(l: &pb::Latent) -> String {
    let shape = format::shape(&l.shape);
    let mut s = latent_fields(l, &shape);
    if let Some(e) = json::edited(l) {
        let parents: Vec<String> = e
            .parent_ids
            .iter()
            .map(|p| match e.deleted_parent_ids.contains(p) {
                true => format!("{p} (deleted)"),
                false => p.clone(),
            })
            .collect();
        s.push_str(&format!(
            "edit:     {} {}\nparents:  {}\n",
            e.op,
            e.params_json,
            parents.join(", ")
        ));
    }
    s
}

fn latent_fields(l: &pb::Latent, shape: &str) -> String {
    format!(
        "id:       {}\nname:     {}\ntags:     {}\norigin:   {}\nshape:    {}\nmodel:    {}\nencode:   {}\npreview:  S={}\ncreated:  {}\njob:      {}\n",
        l.id,
        l.name,
        l.tags.join(", "),
        format::origin_detail(l),
        shape,
        l.model_fingerprint,
        format::encoding(l),
        l.preview_steps,
        format::timestamp(l.created_unix_ms),
        l.job_id
    )
}

/// A table of jobs for people.
/// The fleet sharing a PostgreSQL store; on an embedded store, a line saying so.
/// The fleet sharing the store, and the shared queue's length under it.
pub fn daemons_table(st: &pb::Stats, now: i64) -> String {
    let daemons = &st.daemons;
    if daemons.is_empty() {
        return "this daemon serves an embedded (sled) store: no other daemon shares it \
                (see docs/scale-out.md for ddimd serve --store)\n"
            .to_string();
    }
    let mut s = format!(
        "{:<28}  {:<22} {:<10} {:<16} {:<12} {}\n",
        "ID", "ADDRESS", "DEVICE", "MODEL", "RUNNING", "HEARTBEAT"
    );
    for d in daemons {
        let age = (now - d.heartbeat_unix_ms).max(0) as f64 / 1000.0;
        let running = if d.running_job_id.is_empty() {
            "idle"
        } else {
            d.running_job_id.as_str()
        };
        s.push_str(&format!(
            "{:<28}  {:<22} {:<10} {:<16} {:<12} {} ago\n",
            format::fit(&d.id, 28),
            format::fit(&d.address, 22),
            format::fit(&d.device, 10),
            format::fit(&d.fingerprint, 16),
            format::fit(running, 12),
            format::duration(age)
        ));
    }
    s.push_str(&format!(
        "shared queue: {} waiting (this daemon takes submits while fewer than --max-queue {})\n",
        st.shared_queued, st.max_queue
    ));
    s
}

pub fn jobs_table(jobs: &[pb::Job], now: i64) -> String {
    let mut s = format!(
        "{:<36}  {:<12} {:<10} {:>11}  {:>8}  {:<22} {}\n",
        "ID", "KIND", "STATE", "STEP", "WAIT", "RAN BY", "ERROR"
    );
    for j in jobs {
        let by = if j.ran_by.is_empty() { "-" } else { &j.ran_by };
        s.push_str(&format!(
            "{:<36}  {:<12} {:<10} {:>11}  {:>8}  {:<22} {}\n",
            j.id,
            j.kind,
            format::state_name(j.state),
            format!("{}/{}", j.step, j.total_steps),
            format::duration(format::wait_secs(j, now)),
            format::fit(by, 22),
            j.error
        ));
    }
    s
}

/// The outputs of several jobs as one: the human texts one after the other, the JSON
/// `{"jobs": [...]}`.
fn jobs_output(outs: Vec<Output>) -> Output {
    Output {
        human: outs.iter().map(|o| o.human.as_str()).collect(),
        json: json!({ "jobs": outs.into_iter().map(|o| o.json).collect::<Vec<_>>() }),
    }
}

async fn submit(
    c: &Client,
    spec: Kind,
    wait: WaitArgs,
    show_progress: bool,
) -> Result<Output, ClientError> {
    let job = c.submit(spec).await?;
    if !wait.wait {
        return Ok(Output {
            human: format!("queued {} job {}", job.kind, job.id),
            json: json::job(&job),
        });
    }
    let job = wait_for(c, job, show_progress).await?;
    finished_output(job)
}

fn finished_output(job: pb::Job) -> Result<Output, ClientError> {
    match pb::JobState::try_from(job.state) {
        Ok(pb::JobState::Done) => Ok(Output {
            human: result_summary(&job),
            json: json::job(&job),
        }),
        Ok(pb::JobState::Failed) => Err(ClientError::new(
            ErrorKind::Other,
            format!("job {} failed: {}", job.id, job.error),
        )),
        Ok(pb::JobState::Cancelled) => Err(ClientError::new(
            ErrorKind::Other,
            format!("job {} was cancelled", job.id),
        )),
        _ => Ok(Output {
            human: format!("job {} is {}", job.id, format::state_name(job.state)),
            json: json::job(&job),
        }),
    }
}

/// An eval result for people: one line per cell (FD with its bootstrap interval,
/// the judge's confidence), each cell's paired comparison with the η = 0 cell of its
/// S, then the real-vs-real floor.
pub fn eval_summary(e: &pb::EvalResult) -> String {
    let mut s = format!(
        "{:>6}  {:>6}  {:>10}  {:>21}  {:>10}\n",
        "S", "η", "N", "FD [2.5%, 97.5%]", "confidence"
    );
    for c in &e.cells {
        let eta = if c.sigma_hat {
            "σ̂".to_string()
        } else {
            format!("{}", c.eta)
        };
        s.push_str(&format!(
            "{:>6}  {:>6}  {:>10}  {:>21}  {:>10.3}\n",
            c.steps,
            eta,
            c.n,
            format!("{:.2} [{:.2}, {:.2}]", c.fd, c.fd_low, c.fd_high),
            c.confidence
        ));
    }
    for line in e.cells.iter().filter_map(crate::screens::eval::paired_text) {
        s.push_str(&line);
        s.push('\n');
    }
    if let Some(f) = &e.floor {
        s.push_str(&format!(
            "floor (real vs real, {} images): FD {:.2} [{:.2}, {:.2}]\n",
            f.n, f.fd, f.fd_low, f.fd_high
        ));
    }
    s
}

/// What a finished job produced, for people.
/// `ddim job`: where a job stands, who ran it, and its results once done.
pub fn job_detail(j: &pb::Job) -> String {
    let mut s = format!(
        "job {} ({}) {}\nstep {}/{}, attempt {}\n",
        j.id,
        j.kind,
        format::state_name(j.state),
        j.step,
        j.total_steps,
        j.attempts
    );
    if !j.ran_by.is_empty() {
        s.push_str(&format!("ran by {}\n", j.ran_by));
    }
    if !j.error.is_empty() {
        s.push_str(&format!("error: {}\n", j.error));
    }
    if j.state == pb::JobState::Done as i32 {
        // The summary without its first line (`job … done`, said above).
        let sum = result_summary(j);
        s.push_str(sum.split_once('\n').map_or("", |(_, rest)| rest));
    }
    s
}

pub fn result_summary(job: &pb::Job) -> String {
    let mut s = format!("job {} ({}) done\n", job.id, job.kind);
    let Some(r) = &job.result else { return s };
    if let Some(e) = &r.eval {
        s.push_str(&eval_summary(e));
    }
    let several = r.reconstruction.iter().any(|p| p.images > 1);
    if several {
        let n = r.reconstruction[0].images;
        s.push_str(&format!(
            "{:>6}  {:>12}  {:>10}  (mean over {n} images)\n",
            "S", "MSE", "± s.e.m."
        ));
        for p in &r.reconstruction {
            s.push_str(&format!(
                "{:>6}  {:>12.6}  {:>10.6}\n",
                p.steps, p.mse, p.mse_sem
            ));
        }
    } else if !r.reconstruction.is_empty() {
        s.push_str(&format!("{:>6}  {:>12}\n", "S", "MSE"));
        for p in &r.reconstruction {
            s.push_str(&format!("{:>6}  {:>12.6}\n", p.steps, p.mse));
        }
    }
    for d in &r.decodes {
        s.push_str(&format!("decoded at S={} η={}\n", d.steps, d.eta));
    }
    if job.kind == "grid" {
        // Cells, not frames: the saved ones by (row, column).
        let n = match job.spec.as_ref().and_then(|s| s.kind.as_ref()) {
            Some(Kind::Grid(g)) => g.size.max(1),
            _ => (r.frames.len() as f64).sqrt().round().max(1.0) as u32,
        };
        s.push_str(&format!("grid {n}×{n}: {} cells decoded\n", r.frames.len()));
        for f in r.frames.iter().filter(|f| !f.latent_id.is_empty()) {
            s.push_str(&format!(
                "cell ({}, {})  latent {}\n",
                f.index / n,
                f.index % n,
                f.latent_id
            ));
        }
        return s;
    }
    for f in &r.frames {
        s.push_str(&format!(
            "frame {:>2}  α={:.3}  {}\n",
            f.index, f.alpha, f.latent_id
        ));
    }
    for id in &r.latent_ids {
        s.push_str(&format!("latent {id}\n"));
    }
    s
}

/// Follows a job with WatchJob (falling back to polling) until it ends; shows a progress
/// bar when asked. Returns the job with its result.
pub async fn wait_for(
    c: &Client,
    job: pb::Job,
    show_progress: bool,
) -> Result<pb::Job, ClientError> {
    if format::is_terminal(job.state) {
        return c.get_job(&job.id).await;
    }
    let bar = show_progress.then(|| {
        let b = ProgressBar::new(u64::from(job.total_steps.max(1)));
        b.set_style(
            ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} eta {eta}")
                .expect("static template")
                .progress_chars("=> "),
        );
        b.set_message(format::state_name(job.state));
        b
    });
    let finished = match c.watch_job(&job.id, 0).await {
        Ok(mut stream) => {
            let mut out = None;
            while let Some(item) = stream.next().await {
                let ev = item.map_err(|s| c.stream_error(s))?;
                match ev.event {
                    Some(Event::QueuedPosition(p)) => {
                        if let Some(b) = &bar {
                            b.set_message(format!("queued #{p}"));
                        }
                    }
                    Some(Event::Started(_)) => {
                        if let Some(b) = &bar {
                            b.set_message("running");
                        }
                    }
                    Some(Event::Progress(p)) => {
                        if let Some(b) = &bar {
                            b.set_length(u64::from(p.total.max(1)));
                            b.set_position(u64::from(p.step));
                        }
                    }
                    Some(Event::Finished(j)) => {
                        out = Some(j);
                        break;
                    }
                    None => {}
                }
            }
            out
        }
        Err(e) if e.kind == ErrorKind::NotFound || e.kind == ErrorKind::Unreachable => {
            return Err(e);
        }
        Err(_) => None,
    };
    // Poll when the stream ended without a `finished` event (or could not start).
    let job = match finished {
        Some(j)
            if j.result.is_some()
                || !matches!(pb::JobState::try_from(j.state), Ok(pb::JobState::Done)) =>
        {
            j
        }
        _ => loop {
            let j = c.get_job(&job.id).await?;
            if format::is_terminal(j.state) {
                break j;
            }
            if let Some(b) = &bar {
                b.set_length(u64::from(j.total_steps.max(1)));
                b.set_position(u64::from(j.step));
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        },
    };
    if let Some(b) = bar {
        b.finish_with_message(format::state_name(job.state));
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemons_table_lists_the_fleet_or_says_it_is_alone() {
        let d = |id: &str, running: &str, beat: i64| pb::StoreDaemon {
            id: id.into(),
            address: "10.0.0.2:7860".into(),
            device: "cuda:0".into(),
            fingerprint: "cc4546dcfac296d4".into(),
            running_job_id: running.into(),
            heartbeat_unix_ms: beat,
            started_unix_ms: 0,
        };
        let st = pb::Stats {
            daemons: vec![d("gpu1:41", "job-7", 9_000), d("gpu2:42", "", 7_500)],
            shared_queued: 12,
            max_queue: 1000,
            ..Default::default()
        };
        let t = daemons_table(&st, 10_000);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        assert_eq!(
            lines[3],
            "shared queue: 12 waiting (this daemon takes submits while fewer than --max-queue 1000)"
        );
        assert!(
            lines[0].starts_with("ID") && lines[0].contains("HEARTBEAT"),
            "{t}"
        );
        assert!(
            lines[1].contains("gpu1:41") && lines[1].contains("job-7"),
            "{t}"
        );
        assert!(lines[1].ends_with("1.0s ago"), "{t}");
        assert!(
            lines[2].contains("idle") && lines[2].ends_with("2.5s ago"),
            "{t}"
        );
        let alone = daemons_table(&pb::Stats::default(), 0);
        assert_eq!(alone.lines().count(), 1);
        assert!(alone.contains("sled"), "{alone}");
    }

    /// `ddim jobs` and `ddim job` say which daemon ran a job (a dash, and nothing,
    /// for one no daemon started).
    #[test]
    fn jobs_say_which_daemon_ran_them() {
        let ran = pb::Job {
            id: "job-7".into(),
            kind: "sample".into(),
            state: pb::JobState::Done as i32,
            step: 50,
            total_steps: 50,
            attempts: 2,
            ran_by: "gpu2:4242".into(),
            ..Default::default()
        };
        let queued = pb::Job {
            id: "job-8".into(),
            kind: "sample".into(),
            state: pb::JobState::Queued as i32,
            total_steps: 50,
            ..Default::default()
        };
        let t = jobs_table(&[ran.clone(), queued.clone()], 0);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("RAN BY"), "{t}");
        let col = lines[0].find("RAN BY").unwrap();
        assert!(lines[1][col..].starts_with("gpu2:4242 "), "{t}");
        assert!(lines[2][col..].starts_with("- "), "{t}");
        let d = job_detail(&ran);
        assert!(d.starts_with("job job-7 (sample) done\n"), "{d}");
        assert!(
            d.contains("step 50/50, attempt 2\nran by gpu2:4242\n"),
            "{d}"
        );
        assert!(!job_detail(&queued).contains("ran by"));
        assert_eq!(json::job(&ran)["ran_by"], "gpu2:4242");
        assert!(json::job(&queued)["ran_by"].is_null());
    }

    #[test]
    fn summary_lists_mse_per_step() {
        let job = pb::Job {
            id: "j1".into(),
            kind: "reconstruct".into(),
            state: pb::JobState::Done as i32,
            result: Some(pb::JobResult {
                reconstruction: vec![
                    pb::ReconstructionPoint {
                        steps: 10,
                        mse: 0.014,
                        image: None,
                        ..Default::default()
                    },
                    pb::ReconstructionPoint {
                        steps: 100,
                        mse: 0.0009,
                        image: None,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let s = result_summary(&job);
        assert!(s.contains("    10      0.014000"), "{s}");
        assert!(s.contains("   100      0.000900"), "{s}");
        let failed = pb::Job {
            state: pb::JobState::Failed as i32,
            error: "boom".into(),
            ..job
        };
        let e = finished_output(failed).err().unwrap();
        assert!(e.message.contains("boom"));
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn input_errors_name_the_file() {
        let files: Vec<std::path::PathBuf> =
            (0..12).map(|i| format!("img{i}.png").into()).collect();
        let e = ClientError::new(
            ErrorKind::Invalid,
            "rejected by the daemon: encode.images[11].data: not a decodable PNG or JPEG image (x)",
        );
        let e = name_files(e, "encode.images", &files);
        assert_eq!(
            e.message,
            "rejected by the daemon: img11.png: not a decodable PNG or JPEG image (x)"
        );
        let e = ClientError::new(ErrorKind::Invalid, "import.latents[1].name: too long");
        let e = name_files(e, "import.latents", &files);
        assert_eq!(e.message, "the name of img1.png: too long");
        assert!(is_npy(Path::new("x.NPY"), b""));
        assert!(is_npy(Path::new("x.png"), b"\x93NUMPY\x01\x00"));
        assert!(!is_npy(Path::new("x.png"), b"\x89PNG"));
    }

    #[test]
    fn npy_shape_is_read_from_the_header() {
        let mut npy = b"\x93NUMPY\x01\x00v\x00".to_vec();
        npy.extend_from_slice(
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 32, 32), }   \n",
        );
        assert_eq!(npy_shape(&npy), Some(vec![1, 1, 32, 32]));
        assert_eq!(numpy_shape(&[1, 1, 32, 32]), "(1, 1, 32, 32)");
        assert_eq!(numpy_shape(&[5]), "(5,)");
        assert_eq!(npy_shape(b"garbage"), None);
        // Malformed headers answer None, never panic.
        assert_eq!(npy_shape(b"'shape': )(1, 2)"), Some(vec![1, 2]));
        assert_eq!(npy_shape(b"'shape': ) ("), None);
        assert_eq!(npy_shape(b"'shape': (1, x)"), None);
        // Every prefix and single-byte edit of a good header, and random bytes.
        let mut seed = 0x6e70_795fu64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for k in 0..npy.len() {
            let _ = npy_shape(&npy[..k]);
            for v in [b'(', b')', b',', b' ', 0xff, b'9'] {
                let mut m = npy.clone();
                m[k] = v;
                let _ = npy_shape(&m);
            }
        }
        for _ in 0..2000 {
            let len = (next() % 48) as usize;
            let mut b = b"'shape':".to_vec();
            b.extend((0..len).map(|_| b"(),0123456789 \xff"[(next() % 15) as usize]));
            let _ = npy_shape(&b);
        }
    }
}
