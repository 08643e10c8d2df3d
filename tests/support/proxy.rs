//! A TCP proxy the test controls: cutting it makes a server unreachable for
//! the daemon behind it without touching the shared server.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards connections from a loopback port to `target` until cut.
pub struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    cut: Arc<watch::Sender<bool>>,
    accepting: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding to `target` on a free port.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, _) = watch::channel(false);
        let mut proxy = Self {
            addr,
            target,
            cut: Arc::new(cut),
            accepting: None,
        };
        proxy.accept_on(listener);
        proxy
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every forwarded connection and refuses new ones.
    pub fn cut(&mut self) {
        self.cut.send_replace(true);
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
        }
    }

    /// Forwards again, on the same port.
    pub async fn restore(&mut self) {
        self.cut.send_replace(false);
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.accept_on(listener);
    }

    fn accept_on(&mut self, listener: TcpListener) {
        let target = self.target;
        let cut = self.cut.clone();
        self.accepting = Some(tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = cut.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        }));
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
