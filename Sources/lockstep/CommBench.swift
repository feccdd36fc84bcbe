// `lockstep bench-comm`: the all-reduce's time from 8 B to 64 MB on this job's ranks, and the
// ring model's α and β fitted to it (bench/cost-model projects training steps from them).
import ArgumentParser
import Benchmarks
import Collectives
import Configuration
import Foundation
import Training

struct CommBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-comm",
        abstract: "Time the all-reduce from 8 B to 64 MB and fit the ring model's latency and bandwidth.")
    @Option(help: "Simulate N ranks as threads.") var simulateRanks: Int?
    @Option(help: "Largest message in bytes (default 64 MB).") var maxBytes = 64 << 20
    @Option(help: "Seconds of repetitions per size.") var secondsPerSize = 0.3
    @Option(help: "Also write the timings and the fit as JSON to this file.") var json: String?

    func validate() throws {
        try validateSimulatedRanks(simulateRanks)
        guard maxBytes >= 8 else { throw ValidationError("--max-bytes must be at least 8, got \(maxBytes)") }
        guard secondsPerSize > 0 else { throw ValidationError("--seconds-per-size must be positive, got \(secondsPerSize)") }
    }

    func run() throws {
        let (maxBytes, secondsPerSize, json) = (self.maxBytes, self.secondsPerSize, self.json)
        launch(simulateRanks: simulateRanks) { comm in
            guard comm.size > 1 else { throw ConfigError("bench-comm needs at least 2 ranks (mpirun -np 2, or --simulate-ranks 2)") }
            let sizes = allReduceBenchmarkSizes.filter { $0 <= maxBytes }
            let hosts = describeHosts(try hostNames(comm))
            if comm.rank == 0 {
                print("bench-comm: float all-reduce on \(comm.size) ranks [\(comm.kind)], hosts: \(hosts)")
                print("     bytes    median µs   reps   algorithm GB/s")
            }
            let timings = try measureAllReduce(comm, sizes: sizes, secondsPerSize: secondsPerSize) { t in
                guard comm.rank == 0 else { return }
                // The ring's algorithm bandwidth: what each rank moves, 2(p−1)/p·N, per second.
                let p = Double(comm.size), moved = 2 * (p - 1) / p * Double(t.bytes)
                print(String(format: "%10d %12.1f %6d %16.3f", t.bytes, 1e6 * t.seconds, t.repetitions, moved / t.seconds / 1e9))
            }
            guard comm.rank == 0 else { return }
            guard let model = RingModel.fit(timings, ranks: comm.size) else { throw ConfigError("bench-comm: the timings admit no fit (all zero?)") }
            print(String(format: "ring model fit: alpha %.2f µs, beta %.4f ns/byte (%.2f GB/s per link)", 1e6 * model.alpha, 1e9 * model.beta, 1 / model.beta / 1e9))
            print("size       measured µs   model µs   model/measured")
            for t in timings {
                let m = model.allReduceSeconds(bytes: Double(t.bytes), ranks: comm.size)
                print(String(format: "%10d %12.1f %10.1f %8.2f", t.bytes, 1e6 * t.seconds, 1e6 * m, m / t.seconds))
            }
            if let json {
                try writeJSON(["ranks": comm.size, "communicator": comm.kind, "alpha_seconds": model.alpha, "beta_seconds_per_byte": model.beta,
                               "timings": timings.map { ["bytes": $0.bytes, "seconds": $0.seconds, "repetitions": $0.repetitions] }], to: json)
            }
        }
    }
}

/// Hostnames for a log line: "node0, node1", or "vm ×2" when every rank runs on one host.
func describeHosts(_ names: [String]) -> String {
    Set(names).count == 1 ? "\(names[0]) ×\(names.count)" : names.joined(separator: ", ")
}

/// Writes a JSON object with sorted keys, atomically.
func writeJSON(_ object: [String: Any], to path: String) throws {
    let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted])
    try data.write(to: URL(fileURLWithPath: path), options: .atomic)
}
