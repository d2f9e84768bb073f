//! Whole-screen snapshots (TestBackend + insta) fed with recorded daemon answers, app
//! behaviour driven through `handle_event`, and the sixel stream decoded back to pixels.

mod behaviour;
mod edit;
mod eval;
mod fixtures;
mod live_preview;
mod sixel;
mod snapshots;
