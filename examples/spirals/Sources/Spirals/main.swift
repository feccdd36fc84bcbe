// spirals: trains a small network on two interleaved spirals generated in code, with Lockstep
// as a library. One process, simulated ranks or `mpirun -np N`: exact mode gives the same bits,
// and the program prints a fingerprint of every trained tensor to show it.
//
//   spirals [--simulate-ranks N] [--out DIR]
import Foundation
import Lockstep

/// Two spirals, one per class, each point's angle and noise drawn from its index alone.
struct TwoSpirals: Dataset {
    let count: Int
    let seed: UInt64
    var sampleShape: [Int] { [2] }
    var classes: Int { 2 }

    func sample(_ index: Int, into features: UnsafeMutableBufferPointer<Float>) -> Int {
        let label = index % 2
        var random = SplitMix(seed ^ UInt64(index) &* 0x9E37_79B9_7F4A_7C15)
        let t = random.unit() * 3 * Double.pi          // how far along its spiral
        let radius = 0.1 + t / (3 * Double.pi)
        let angle = t + Double(label) * Double.pi
        features[0] = Float(radius * cos(angle) + 0.03 * (random.unit() - 0.5))
        features[1] = Float(radius * sin(angle) + 0.03 * (random.unit() - 0.5))
        return label
    }
}

/// A tiny counter-based generator (SplitMix64): the same numbers for the same seed anywhere.
struct SplitMix {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
}

var simulated: Int?
var out = "runs/spirals"
var arguments = CommandLine.arguments.dropFirst()
while let a = arguments.popFirst() {
    switch a {
    case "--simulate-ranks": simulated = arguments.popFirst().flatMap(Int.init)
    case "--out": out = arguments.popFirst() ?? out
    default:
        FileHandle.standardError.write(Data("spirals: unknown argument '\(a)' (--simulate-ranks N, --out DIR)\n".utf8))
        exit(2)
    }
}

// The model and the run, in code: the same layers and keys as a YAML config.
var config = TrainingConfig()
config.name = "spirals"
config.data.classes = 2
config.model = [.dense(out: 64, bias: true, initializer: nil), .batchNorm(momentum: 0.1, epsilon: 1e-5), .relu,
                .dense(out: 64, bias: true, initializer: nil), .relu,
                .dense(out: 2, bias: true, initializer: nil)]
config.optimizer.kind = .adam
config.optimizer.learningRate = 0.01
config.train.epochs = 40
config.train.globalBatch = 64
config.train.seed = 1
config.train.logEvery = 0
// Exact mode is the default: the same bits on any number of ranks (train.exact = false sums in float).
config.train.chunk = 8
config.output.dir = out

let status = Launcher.run(simulateRanks: simulated) { communicator in
    let data = try TrainingData(train: TwoSpirals(count: 2048, seed: 1), test: TwoSpirals(count: 512, seed: 2))
    let trainer = try Trainer(config: config, communicator: communicator, data: data, console: Console(isEnabled: false))
    trainer.onEpoch = { m in
        if communicator.rank == 0 && m.epoch % 10 == 0 {
            print(String(format: "epoch %d: train loss %.4f, test accuracy %.2f%%", m.epoch, m.trainLoss, 100 * m.testAccuracy))
        }
    }
    let (_, history) = try trainer.run(resume: nil, overwrite: true)
    // Every trained tensor's bits: parameters, running statistics, optimizer state.
    var fingerprint = Fingerprint()
    fingerprint.add(floats: UnsafeBufferPointer(trainer.model.parameters.flatValues))
    fingerprint.add(floats: UnsafeBufferPointer(trainer.model.buffers.flatValues))
    for state in trainer.optimizer.state { fingerprint.add(floats: UnsafeBufferPointer(state.values)) }
    if communicator.rank == 0 {
        print(String(format: "trained on %d rank(s): test accuracy %.2f%%", communicator.size, 100 * (history.last?.testAccuracy ?? 0)))
        print(String(format: "fingerprint of the trained state: %016llx", fingerprint.value))
    }
}
exit(status)
