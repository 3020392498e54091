//! Run the test API server until interrupted and print an admin kubeconfig path, for
//! trying it with kubectl: `cargo run -p osroll-sim --example serve`.

fn main() -> anyhow::Result<()> {
    let server = osroll_sim::TestServer::start()?;
    println!("{}", server.kubeconfig().display());
    println!("export KUBECONFIG={}", server.kubeconfig().display());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    let _ = rx.recv();
    Ok(())
}
