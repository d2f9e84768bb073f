//! The daemon side of the UI: one task that turns `Request`s into client calls and sends
//! `Update`s back over an mpsc channel, plus the library watch that doubles as the
//! connection monitor (retrying with backoff while the daemon is down).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ddim_proto::v1::{self as pb, job_spec::Kind};
use futures::StreamExt;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::client::{Client, ClientError, ErrorKind};
use crate::script;

/// Why a job was submitted, so its answer lands on the right screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Reconstruct,
    Interpolate,
    /// An interpolation re-run only to store one frame as a latent.
    SaveFrame,
    Decode,
    /// An edit committed from the Edit screen.
    Edit,
    /// An eval job queued from the Eval screen.
    Eval,
    /// Encode and sample: results show up in the library.
    Library,
}

/// What the UI asks of the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    ListLatents {
        generation: u64,
        page: usize,
        /// Position of the page's first row in the sorted, filtered list.
        offset: u64,
        page_size: u32,
        filter: crate::screens::library::Filter,
        order_by: pb::SortOrder,
    },
    Preview {
        id: String,
    },
    /// The encoded source image (for latents that kept it).
    Source {
        id: String,
    },
    LatentJobs {
        id: String,
    },
    /// A latent's name, for a screen opened from a job that names it by id.
    LatentName {
        id: String,
    },
    ListJobs,
    /// The newest eval jobs, however many other jobs came after them.
    ListEvalJobs,
    /// `GetStats`: the daemons sharing a PostgreSQL store (the status line's fleet).
    Stats,
    /// `GetModelInfo`: the daemon's model (the library marks latents of other models).
    ModelInfo,
    /// Follow a job's events; `preview_every` > 0 also brings x̂0 previews.
    WatchJob {
        id: String,
        preview_every: u32,
    },
    GetJob {
        id: String,
    },
    Submit {
        spec: Kind,
        purpose: Purpose,
    },
    /// An edit run at a small S without storing anything; `seq` numbers the requests
    /// so only the newest answer is shown.
    PreviewEdit {
        seq: u64,
        spec: Kind,
        steps: u32,
        client_id: String,
    },
    /// Reads the file, then submits a reconstruction of it.
    ReconstructFile {
        path: PathBuf,
        steps: Vec<u32>,
    },
    /// Reads the files (a directory means its .png/.jpg files), then submits one encode.
    Encode {
        paths: Vec<PathBuf>,
        steps: u32,
    },
    Cancel {
        id: String,
    },
    Rename {
        id: String,
        name: String,
    },
    Tag {
        id: String,
        add: Vec<String>,
        remove: Vec<String>,
    },
    Delete {
        ids: Vec<String>,
    },
    ExportPreview {
        id: String,
        path: PathBuf,
    },
    SavePng {
        png: Vec<u8>,
        path: PathBuf,
    },
}

/// Daemon connection as the library watch sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Up,
    Down { message: String, retry_in: Duration },
}

/// What the daemon answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    Link(Link),
    LatentPage {
        generation: u64,
        page: usize,
        resp: pb::ListLatentsResponse,
    },
    PageFailed {
        generation: u64,
        page: usize,
        error: ClientError,
    },
    Preview {
        id: String,
        image: pb::Image,
    },
    Source {
        id: String,
        image: pb::Image,
    },
    LatentJobs {
        id: String,
        jobs: Vec<pb::Job>,
    },
    Jobs(Vec<pb::Job>),
    EvalJobs(Vec<pb::Job>),
    Stats(pb::Stats),
    ModelInfo(pb::ModelInfo),
    JobEvent(pb::JobEvent),
    Job(pb::Job),
    Submitted {
        purpose: Purpose,
        job: pb::Job,
    },
    Latent(pb::Latent),
    LatentName {
        id: String,
        name: String,
    },
    Library(pb::LibraryEvent),
    /// The answer to `PreviewEdit` number `seq` (an error as its message).
    EditPreview {
        seq: u64,
        result: Result<pb::PreviewEditResponse, String>,
    },
    Info(String),
    Error(ClientError),
}

/// Spawns the request handler and the library watch; both end when `rx` closes or
/// the update receiver is dropped.
pub fn spawn(client: Client, mut rx: UnboundedReceiver<Request>, tx: UnboundedSender<Update>) {
    tokio::spawn(watch_library(client.clone(), tx.clone()));
    let watched = Arc::new(Mutex::new(HashSet::<String>::new()));
    tokio::spawn(async move {
        while let Some(req) = rx.recv().await {
            if let Request::WatchJob { id, preview_every } = &req {
                let fresh = watched
                    .lock()
                    .map(|mut w| w.insert(id.clone()))
                    .unwrap_or(false);
                if fresh {
                    let (c, tx, w, id) = (client.clone(), tx.clone(), watched.clone(), id.clone());
                    let every = *preview_every;
                    tokio::spawn(async move {
                        watch_job(&c, &id, every, &tx).await;
                        if let Ok(mut w) = w.lock() {
                            w.remove(&id);
                        }
                    });
                }
                continue;
            }
            let (c, tx) = (client.clone(), tx.clone());
            tokio::spawn(async move {
                if let Err(e) = handle(&c, req, &tx).await {
                    let _ = tx.send(Update::Error(e));
                }
            });
        }
    });
}

/// Backoff while the daemon is down: 0.5 s doubling to 8 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << attempt.min(4)))
}

async fn watch_library(c: Client, tx: UnboundedSender<Update>) {
    let mut attempt = 0;
    loop {
        let message = match c.watch_library().await {
            Ok(mut stream) => {
                attempt = 0;
                if tx.send(Update::Link(Link::Up)).is_err() {
                    return;
                }
                let mut msg = "the daemon closed the library stream".to_string();
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(ev) => {
                            if tx.send(Update::Library(ev)).is_err() {
                                return;
                            }
                        }
                        Err(s) => {
                            msg = c.stream_error(s).message;
                            break;
                        }
                    }
                }
                msg
            }
            Err(e) if e.kind == ErrorKind::Unreachable => e.message,
            Err(e) => {
                // Reachable but no live updates (old daemon, auth …): say so, retry slowly.
                let _ = tx.send(Update::Link(Link::Up));
                let _ = tx.send(Update::Error(ClientError::new(
                    e.kind,
                    format!("no live library updates: {}", e.message),
                )));
                tokio::time::sleep(Duration::from_secs(30)).await;
                continue;
            }
        };
        let retry_in = backoff(attempt);
        attempt += 1;
        tracing::info!(%message, ?retry_in, "daemon down");
        if tx
            .send(Update::Link(Link::Down { message, retry_in }))
            .is_err()
        {
            return;
        }
        tokio::time::sleep(retry_in).await;
    }
}

async fn watch_job(c: &Client, id: &str, preview_every: u32, tx: &UnboundedSender<Update>) {
    match c.watch_job(id, preview_every).await {
        Ok(mut stream) => {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(ev) => {
                        let last = matches!(ev.event, Some(pb::job_event::Event::Finished(_)));
                        if tx.send(Update::JobEvent(ev)).is_err() || last {
                            return;
                        }
                    }
                    Err(s) => {
                        tracing::warn!(id, error = %s, "job watch ended");
                        break;
                    }
                }
            }
            // The stream ended without `finished`: fetch the job's final state instead.
            if let Ok(j) = c.get_job(id).await {
                let _ = tx.send(Update::Job(j));
            }
        }
        Err(e) => {
            let _ = tx.send(Update::Error(e));
        }
    }
}

async fn handle(c: &Client, req: Request, tx: &UnboundedSender<Update>) -> Result<(), ClientError> {
    let send = |u| {
        let _ = tx.send(u);
    };
    match req {
        Request::ListLatents {
            generation,
            page,
            offset,
            page_size,
            filter,
            order_by,
        } => {
            let resp = c
                .list_latents(pb::ListLatentsRequest {
                    page_size,
                    offset,
                    name_contains: filter.name,
                    tag: filter.tag,
                    origin: filter.origin,
                    order_by: order_by as i32,
                    ..Default::default()
                })
                .await;
            match resp {
                Ok(resp) => send(Update::LatentPage {
                    generation,
                    page,
                    resp,
                }),
                Err(error) => send(Update::PageFailed {
                    generation,
                    page,
                    error,
                }),
            }
        }
        Request::Preview { id } => {
            let image = c.latent_image(&id, pb::LatentImageKind::Preview, 0).await?;
            send(Update::Preview { id, image });
        }
        Request::Source { id } => {
            let image = c.latent_image(&id, pb::LatentImageKind::Source, 0).await?;
            send(Update::Source { id, image });
        }
        Request::LatentJobs { id } => {
            let jobs = c.list_jobs(20, &id).await?;
            send(Update::LatentJobs { id, jobs });
        }
        Request::LatentName { id } => match c.get_latent(&id).await {
            Ok(l) => send(Update::LatentName { id, name: l.name }),
            // A deleted latent keeps its short id on the screen; nothing to say.
            Err(e) => tracing::debug!(id, error = %e, "no name for latent"),
        },
        Request::ListJobs => send(Update::Jobs(c.list_jobs(200, "").await?)),
        Request::ListEvalJobs => send(Update::EvalJobs(
            c.list_jobs_of(100, "", &["eval".to_string()]).await?,
        )),
        // The fleet is a hint: a failure (the link says why) leaves it as it was.
        Request::Stats => match c.stats().await {
            Ok(st) => send(Update::Stats(st)),
            Err(e) => tracing::debug!(error = %e.message, "no stats"),
        },
        Request::ModelInfo => send(Update::ModelInfo(c.model_info().await?)),
        Request::WatchJob { .. } => {}
        Request::GetJob { id } => send(Update::Job(c.get_job(&id).await?)),
        Request::Submit { spec, purpose } => {
            let job = c.submit(spec).await?;
            send(Update::Submitted { purpose, job });
        }
        Request::PreviewEdit {
            seq,
            spec,
            steps,
            client_id,
        } => {
            // A superseded preview answers ABORTED: the app drops it with every answer
            // to an older request.
            let result = c
                .preview_edit(spec, steps, &client_id)
                .await
                .map_err(|e| e.message);
            send(Update::EditPreview { seq, result });
        }
        Request::ReconstructFile { path, steps } => {
            let input = script::encode_input(&path, &[])?;
            let spec = Kind::Reconstruct(pb::ReconstructJob {
                input: Some(pb::reconstruct_job::Input::Image(input.data)),
                steps,
                spacing: 0,
                solver: 0,
            });
            let job = c.submit(spec).await?;
            send(Update::Submitted {
                purpose: Purpose::Reconstruct,
                job,
            });
        }
        Request::Encode { paths, steps } => {
            // .npy files are x_T already: imported, not encoded.
            let (spec, what, files, field) = if paths.iter().all(|p| is_npy(p)) {
                let latents = paths
                    .iter()
                    .map(|f| script::import_input(f, &[]))
                    .collect::<Result<Vec<_>, _>>()?;
                let what = format!("importing {} .npy file(s)", latents.len());
                let spec = Kind::Import(pb::ImportJob {
                    latents,
                    preview_steps: 0,
                    spacing: 0,
                });
                (spec, what, paths.clone(), "import.latents")
            } else {
                let files = expand_images(&paths)?;
                let mut images = vec![];
                for f in &files {
                    let input = script::encode_input(f, &[])?;
                    if script::is_npy(f, &input.data) {
                        return Err(ClientError::new(
                            ErrorKind::Invalid,
                            format!(
                                "{} is x_T (.npy), not an image: import .npy files on their own",
                                f.display()
                            ),
                        ));
                    }
                    images.push(input);
                }
                let what = format!("encoding {} image(s) at S={steps}", images.len());
                let spec = Kind::Encode(pb::EncodeJob {
                    images,
                    steps,
                    spacing: 0,
                    preview_steps: 0,
                    solver: 0,
                });
                (spec, what, files, "encode.images")
            };
            let job = c
                .submit(spec)
                .await
                .map_err(|e| script::name_files(e, field, &files))?;
            send(Update::Info(format!("{what}: job {}", job.id)));
            send(Update::Submitted {
                purpose: Purpose::Library,
                job,
            });
        }
        Request::Cancel { id } => {
            let job = c.cancel(&id).await?;
            send(Update::Info(format!(
                "job {} is {}",
                crate::format::short_id(&job.id),
                crate::format::state_name(job.state)
            )));
            send(Update::Job(job));
        }
        Request::Rename { id, name } => send(Update::Latent(c.rename(&id, &name).await?)),
        Request::Tag { id, add, remove } => send(Update::Latent(c.tag(&id, add, remove).await?)),
        Request::Delete { ids } => {
            let mut jobs = 0;
            for id in &ids {
                jobs += c.delete(id).await?.jobs_deleted;
            }
            send(Update::Info(format!(
                "deleted {} latent(s) and {jobs} job(s)",
                ids.len()
            )));
        }
        Request::ExportPreview { id, path } if is_npy(&path) => {
            let r = c.export_latent(&id).await?;
            script::write_png(&path, &r.npy)?;
            send(Update::Info(format!("wrote x_T to {}", path.display())));
        }
        Request::ExportPreview { id, path } => {
            let img = c.latent_image(&id, pb::LatentImageKind::Preview, 0).await?;
            script::write_png(&path, &img.png)?;
            send(Update::Info(format!("wrote {}", path.display())));
        }
        Request::SavePng { png, path } => {
            script::write_png(&path, &png)?;
            send(Update::Info(format!("wrote {}", path.display())));
        }
    }
    Ok(())
}

/// A `.npy` path (x_T to import rather than an image to encode).
pub fn is_npy(p: &std::path::Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Files as given, with directories replaced by the PNG/JPEG files inside them.
pub fn expand_images(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ClientError> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|e| {
                ClientError::new(
                    ErrorKind::Other,
                    format!("cannot list {}: {e}", p.display()),
                )
            })?;
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    f.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg")
                    })
                })
                .collect();
            files.sort();
            out.extend(files);
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        return Err(ClientError::new(
            ErrorKind::Invalid,
            "no PNG or JPEG files to encode",
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(30), Duration::from_secs(8));
    }

    #[test]
    fn directories_expand_to_images() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b.png"), b"x").unwrap();
        std::fs::write(d.path().join("a.JPG"), b"x").unwrap();
        std::fs::write(d.path().join("notes.txt"), b"x").unwrap();
        let got = expand_images(&[d.path().to_path_buf()]).unwrap();
        let names: Vec<_> = got
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(names, ["a.JPG", "b.png"]);
        assert!(expand_images(&[]).is_err());
    }
}
