//! The event loop: `tokio::select!` over terminal events, a render tick and daemon
//! updates; every event goes through `App::handle_event`, then one `render`.

use std::time::Duration;

use anyhow::Result;
use crossterm::event::{Event as TermEvent, EventStream};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::app::{App, Event};
use crate::client::Client;
use crate::config::Settings;
use crate::format::now_ms;
use crate::graphics::Graphics;
use crate::{tui, worker};

const TICK: Duration = Duration::from_millis(200);

pub async fn run(settings: Settings, client: Client) -> Result<()> {
    let log = crate::logging::init();
    tracing::info!(addr = client.addr(), ?log, "ddim starting");
    let mut terminal = tui::init()?;
    // Query the terminal's graphics support before anything reads its input.
    let graphics = Graphics::detect(settings.graphics);
    let result = event_loop(&mut terminal, graphics, client).await;
    tui::restore();
    result
}

async fn event_loop(terminal: &mut tui::Term, graphics: Graphics, client: Client) -> Result<()> {
    let size = terminal.size()?;
    let (req_tx, req_rx) = mpsc::unbounded_channel();
    let (upd_tx, mut upd_rx) = mpsc::unbounded_channel();
    let mut app = App::new(client.addr(), graphics, (size.width, size.height), now_ms());
    worker::spawn(client, req_rx, upd_tx);
    for r in app.start() {
        let _ = req_tx.send(r);
    }
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(TICK);
    loop {
        terminal.draw(|f| app.render(f))?;
        let event = tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(TermEvent::Key(k))) => Event::Key(k),
                Some(Ok(TermEvent::Resize(w, h))) => Event::Resize(w, h),
                Some(Ok(TermEvent::Mouse(m))) => Event::Mouse(m),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => break,
            },
            Some(u) = upd_rx.recv() => Event::Update(u),
            _ = tick.tick() => Event::Tick(now_ms()),
        };
        for r in app.handle_event(event) {
            let _ = req_tx.send(r);
        }
        // Take every update already waiting before drawing again.
        while let Ok(u) = upd_rx.try_recv() {
            for r in app.handle_event(Event::Update(u)) {
                let _ = req_tx.send(r);
            }
        }
        if app.quit {
            break;
        }
    }
    Ok(())
}
