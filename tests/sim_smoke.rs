use raftkv::sim::*;

fn chaos(seed: u64) -> SimConfig {
    let mut cfg = SimConfig::new(seed, 3 + (seed % 3) as usize * 2 - 0);
    cfg.nodes = [3, 5, 1, 3, 7][(seed % 5) as usize];
    cfg.clients = 4;
    cfg.network = NetworkConfig::unreliable();
    cfg.faults = FaultConfig {
        crash: 0.01,
        restart: 0.05,
        partition: 0.01,
        heal: 0.03,
    };
    cfg
}

#[test]
fn smoke() {
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let t = std::time::Instant::now();
    for seed in 0..n {
        let mut sim = Sim::new(chaos(seed));
        let ok = sim.run_ticks(1000);
        let r = if ok {
            sim.settle(3000)
        } else {
            Err(sim.failure().unwrap().to_string())
        };
        if let Err(e) = r {
            let mut c = chaos(seed);
            c.trace = 60;
            let mut sim = Sim::new(c);
            sim.run_ticks(1000);
            let _ = sim.settle(3000);
            panic!("{e}\n{}", sim.trace().join("\n"));
        }
    }
    println!("{n} seeds in {:?}", t.elapsed());
}
