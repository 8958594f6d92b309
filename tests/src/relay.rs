//! A TCP relay in front of a real server that a test can cut and restore, to play an
//! outage of a provider without stopping the server other tests share.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Relay {
    /// Where clients connect instead of the server.
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl Relay {
    /// Relays connections to `target` (`HOST:PORT`) until the relay is dropped.
    pub async fn start(target: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let target = target.to_string();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                let mut cut = cut_rx.clone();
                tokio::spawn(async move {
                    if *cut.borrow() {
                        return;
                    }
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        // Closed or cut: both ends go away, as when the server dies.
                        _ = cut.wait_for(|c| *c) => {}
                    }
                });
            }
        });
        Relay { addr, cut }
    }

    /// Cuts every connection and refuses new ones (`true`), or relays again (`false`).
    pub fn cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}
