//! A TCP proxy in front of the test server that can cut the network: `cut` closes every
//! connection through it and refuses new ones until `restore`, as a failed link or a restarted
//! load balancer would.

use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct Links {
    cut: bool,
    open: Vec<AbortHandle>,
}

pub struct Proxy {
    pub port: u16,
    links: Arc<Mutex<Links>>,
    accept: AbortHandle,
}

impl Proxy {
    /// Listens on a free local port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let links = Arc::new(Mutex::new(Links::default()));
        let accept = tokio::spawn({
            let links = links.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let mut guard = links.lock().unwrap_or_else(|p| p.into_inner());
                    if guard.cut {
                        continue; // dropped: the client sees the connection closed
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    guard.open.retain(|h| !h.is_finished());
                    guard.open.push(link.abort_handle());
                }
            }
        })
        .abort_handle();
        Ok(Proxy {
            port,
            links,
            accept,
        })
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        let mut guard = self.links.lock().unwrap_or_else(|p| p.into_inner());
        guard.cut = true;
        for link in guard.open.drain(..) {
            link.abort();
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).cut = false;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
