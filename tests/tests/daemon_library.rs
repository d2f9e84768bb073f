//! `ListLatents` sorting and paging through a real `ddimd serve`: every order,
//! token and offset paging over the same list, filters with a sort, and the
//! validation of `order_by`.
//!
//! Backends: every test here runs on sled and on PostgreSQL (`on_backends!` at the
//! end: `NAME::sled`, `NAME::postgres`; the PostgreSQL ones each on a database of
//! their own on one server per test binary). Left sled-only: none.
//!
//! Needs the binaries: `cargo build --workspace --bins`.
use ddim_proto::v1 as pb;
use ddim_tests::*;
use tonic::Code;

fn garment(seed: u8) -> Vec<u8> {
    png(28, 28, move |x, y| {
        if (6..22).contains(&x) && (4..24).contains(&y) {
            120 + seed
        } else {
            0
        }
    })
}

fn sample_named(count: u32, seed: u64, prefix: &str, tags: &[&str]) -> pb::JobSpec {
    let mut spec = sample_spec(count, seed, 2);
    if let Some(pb::job_spec::Kind::Sample(s)) = spec.kind.as_mut() {
        s.name_prefix = prefix.into();
        s.tags = tags.iter().map(|t| t.to_string()).collect();
    }
    spec
}

fn num(id: &str) -> u64 {
    id.strip_prefix("lat-").unwrap().parse().unwrap()
}

fn ids(ls: &[pb::Latent]) -> Vec<String> {
    ls.iter().map(|l| l.id.clone()).collect()
}

/// The order the daemon must produce, by brute force from the metadata.
fn expected(all: &[pb::Latent], order: pb::SortOrder) -> Vec<String> {
    let mut v = all.to_vec();
    match order {
        pb::SortOrder::Unspecified | pb::SortOrder::Newest => {
            v.sort_by_key(|l| std::cmp::Reverse(num(&l.id)))
        }
        pb::SortOrder::Oldest => v.sort_by_key(|l| num(&l.id)),
        pb::SortOrder::Name => v.sort_by_key(|l| (l.name.to_lowercase(), num(&l.id))),
        pb::SortOrder::EncodeSteps => v.sort_by_key(|l| {
            (
                std::cmp::Reverse(l.encode_steps),
                std::cmp::Reverse(num(&l.id)),
            )
        }),
    }
    ids(&v)
}

async fn list(c: &mut Client, req: pb::ListLatentsRequest) -> pb::ListLatentsResponse {
    c.list_latents(req).await.unwrap().into_inner()
}

async fn sorted(c: &mut Client, order: pb::SortOrder) -> Vec<pb::Latent> {
    list(
        c,
        pb::ListLatentsRequest {
            order_by: order as i32,
            page_size: 1000,
            ..Default::default()
        },
    )
    .await
    .latents
}

/// Every page by token, checking `total` on each.
async fn by_tokens(c: &mut Client, req: &pb::ListLatentsRequest, size: u32) -> Vec<String> {
    let mut out = vec![];
    let mut token = String::new();
    let mut total = None;
    loop {
        let p = list(
            c,
            pb::ListLatentsRequest {
                page_size: size,
                page_token: token,
                ..req.clone()
            },
        )
        .await;
        assert!(p.latents.len() <= size as usize);
        assert_eq!(*total.get_or_insert(p.total), p.total);
        out.extend(ids(&p.latents));
        token = p.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(out.len() as u64, total.unwrap());
    out
}

/// Every page by offset.
async fn by_offsets(c: &mut Client, req: &pb::ListLatentsRequest, size: u32) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    loop {
        let p = list(
            c,
            pb::ListLatentsRequest {
                page_size: size,
                offset: out.len() as u64,
                ..req.clone()
            },
        )
        .await;
        out.extend(ids(&p.latents));
        if (out.len() as u64) >= p.total || p.latents.is_empty() {
            assert_eq!(out.len() as u64, p.total);
            break;
        }
    }
    out
}

async fn list_latents_sorts_and_pages_by_token_and_offset(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    run_job(&mut c, sample_named(10, 1, "Coat", &["warm"])).await;
    run_job(&mut c, sample_named(8, 2, "boot", &[])).await;
    let names = ["shirt", "Shirt", "apron"];
    let imgs = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), garment(i as u8 * 30)))
        .collect();
    run_job(&mut c, encode_spec(imgs, 4)).await;
    let imgs = vec![("scarf".into(), garment(7)), ("ZIP".into(), garment(90))];
    let enc8 = run_job(&mut c, encode_spec(imgs, 8)).await;
    // A tie on name (case-insensitive) across origins, and a tag on an encoded one.
    let scarf = enc8.result.unwrap().latent_ids[0].clone();
    let all = list(
        &mut c,
        pb::ListLatentsRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(all.total, 23);
    let coat = all
        .latents
        .iter()
        .find(|l| l.tags.contains(&"warm".to_string()))
        .unwrap()
        .id
        .clone();
    c.rename_latent(pb::RenameLatentRequest {
        id: coat,
        name: "SCARF".into(),
    })
    .await
    .unwrap();
    c.tag_latent(pb::TagLatentRequest {
        id: scarf,
        add: vec!["warm".into()],
        remove: vec![],
    })
    .await
    .unwrap();
    let all = list(
        &mut c,
        pb::ListLatentsRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await
    .latents;
    assert_eq!(all.len(), 23);

    let orders = [
        pb::SortOrder::Unspecified,
        pb::SortOrder::Newest,
        pb::SortOrder::Oldest,
        pb::SortOrder::Name,
        pb::SortOrder::EncodeSteps,
    ];
    let filters: [(&str, &str, &str); 5] = [
        ("", "", ""),
        ("", "warm", ""),
        ("", "", "encoded"),
        ("s", "", ""),
        ("scarf", "warm", ""),
    ];
    for (name, tag, origin) in filters {
        let matching: Vec<pb::Latent> = all
            .iter()
            .filter(|l| {
                l.name.to_lowercase().contains(name)
                    && (tag.is_empty() || l.tags.iter().any(|t| t == tag))
                    && (origin.is_empty()
                        || matches!(
                            (origin, l.origin.as_ref().and_then(|o| o.kind.as_ref())),
                            ("encoded", Some(pb::origin::Kind::Encoded(_)))
                        ))
            })
            .cloned()
            .collect();
        assert!(!matching.is_empty(), "{name:?} {tag:?} {origin:?}");
        for order in orders {
            let req = pb::ListLatentsRequest {
                name_contains: name.into(),
                tag: tag.into(),
                origin: origin.into(),
                order_by: order as i32,
                ..Default::default()
            };
            let want = expected(&matching, order);
            for size in [1, 4, 7, 50] {
                let what = format!("{order:?} /{name}/{tag}/{origin} by {size}");
                assert_eq!(by_tokens(&mut c, &req, size).await, want, "tokens {what}");
                assert_eq!(by_offsets(&mut c, &req, size).await, want, "offsets {what}");
            }
            // Past the end: an empty page that still counts the matches.
            let p = list(
                &mut c,
                pb::ListLatentsRequest {
                    offset: want.len() as u64 + 3,
                    ..req.clone()
                },
            )
            .await;
            assert!(p.latents.is_empty() && p.next_page_token.is_empty());
            assert_eq!(p.total, want.len() as u64);
            // A token overrides the offset.
            let first = list(
                &mut c,
                pb::ListLatentsRequest {
                    page_size: 1,
                    ..req.clone()
                },
            )
            .await;
            if !first.next_page_token.is_empty() {
                let p = list(
                    &mut c,
                    pb::ListLatentsRequest {
                        page_size: 1,
                        page_token: first.next_page_token,
                        offset: 1000,
                        ..req.clone()
                    },
                )
                .await;
                assert_eq!(ids(&p.latents), want[1..2]);
            }
        }
    }
    // Spot checks of what the orders mean.
    let named = sorted(&mut c, pb::SortOrder::Name).await;
    assert_eq!(named[0].name, "apron");
    assert_eq!(named.last().unwrap().name, "ZIP");
    let steps = sorted(&mut c, pb::SortOrder::EncodeSteps).await;
    assert_eq!(
        steps.iter().map(|l| l.encode_steps).collect::<Vec<_>>()[..6],
        [8, 8, 4, 4, 4, 0]
    );
    assert_eq!(steps[0].name, "ZIP", "ties newest first");
}

async fn list_latents_rejects_unknown_orders_and_foreign_tokens(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    run_job(&mut c, sample_spec(3, 1, 2)).await;
    let e = c
        .list_latents(pb::ListLatentsRequest {
            order_by: 17,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("order_by"), "{}", e.message());
    // A newest-first token does not continue a name-ordered list.
    let p = list(
        &mut c,
        pb::ListLatentsRequest {
            page_size: 1,
            ..Default::default()
        },
    )
    .await;
    let e = c
        .list_latents(pb::ListLatentsRequest {
            page_token: p.next_page_token,
            order_by: pb::SortOrder::Name as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("page_token"), "{}", e.message());
    // An offset past the end of the whole library.
    let p = list(
        &mut c,
        pb::ListLatentsRequest {
            offset: u64::MAX,
            order_by: pb::SortOrder::Oldest as i32,
            ..Default::default()
        },
    )
    .await;
    assert!(p.latents.is_empty());
    assert_eq!(p.total, 3);
}

/// The origin filter takes an origin's name or any unique prefix of it, in any case
/// (the same rule as `ddim ls --origin` and the TUI's `origin:` word); an ambiguous or
/// unknown one is INVALID_ARGUMENT naming `origin` and the valid names.
async fn the_origin_filter_takes_unique_prefixes(b: Backend) {
    let d = Daemon::builder().backend(b).start().await;
    let mut c = d.client().await;
    let sampled = run_job(&mut c, sample_named(2, 1, "s", &[])).await;
    let s = sampled.result.unwrap().latent_ids;
    run_job(&mut c, encode_spec(vec![("g".into(), garment(3))], 2)).await;
    run_job(&mut c, interpolate_spec(&s[0], &s[1], 3, 2, &[1])).await;
    let origin_of = |l: &pb::Latent| match l.origin.as_ref().and_then(|o| o.kind.as_ref()) {
        Some(pb::origin::Kind::Encoded(_)) => "encoded",
        Some(pb::origin::Kind::Sampled(_)) => "sampled",
        Some(pb::origin::Kind::Interpolated(_)) => "interpolated",
        Some(pb::origin::Kind::Imported(_)) => "imported",
        Some(pb::origin::Kind::Edited(_)) => "edited",
        None => "none",
    };
    let by = |origin: &str| pb::ListLatentsRequest {
        origin: origin.into(),
        page_size: 1000,
        ..Default::default()
    };
    let all = list(&mut c, by("")).await.latents;
    for (filter, want) in [
        ("encoded", "encoded"),
        ("enc", "encoded"),
        ("ENC", "encoded"),
        ("s", "sampled"),
        ("SAMPLED", "sampled"),
        ("int", "interpolated"),
        ("in", "interpolated"),
    ] {
        let got = list(&mut c, by(filter)).await;
        let expect: Vec<String> = ids(&all
            .iter()
            .filter(|l| origin_of(l) == want)
            .cloned()
            .collect::<Vec<_>>());
        assert!(!expect.is_empty(), "{want}");
        assert_eq!(ids(&got.latents), expect, "origin {filter:?}");
        assert_eq!(got.total, expect.len() as u64, "origin {filter:?}");
    }
    // No imported latent here: the prefix still resolves, to an empty list.
    let im = list(&mut c, by("im")).await;
    assert!(im.latents.is_empty() && im.total == 0);
    for bad in ["i", "x", "encodedx"] {
        let e = c.list_latents(by(bad)).await.expect_err(bad);
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {}", e.message());
        assert!(e.message().starts_with("origin: "), "{}", e.message());
        for name in ["encoded", "sampled", "interpolated", "imported"] {
            assert!(e.message().contains(name), "{bad}: {}", e.message());
        }
    }
    let e = c.list_latents(by("i")).await.unwrap_err();
    assert!(e.message().contains("ambiguous"), "{}", e.message());
}

// The tests above on both stores: sled and PostgreSQL (`NAME::sled`, `NAME::postgres`).
on_backends!(
    list_latents_sorts_and_pages_by_token_and_offset,
    list_latents_rejects_unknown_orders_and_foreign_tokens,
    the_origin_filter_takes_unique_prefixes,
);
