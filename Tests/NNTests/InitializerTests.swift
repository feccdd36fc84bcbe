// Initialisers: each random initialiser's empirical spread matches its formula, uniform ones stay
// inside their bound, draws are keyed by seed, and the builder's defaults follow the activation.
import Collectives
import Foundation
@testable import NN
import XCTest

final class InitializerTests: XCTestCase {
    /// Draws a 256×512 dense weight (131,072 values) with `initializer`.
    func weights(_ initializer: Initializer, seed: UInt64 = 7) throws -> [Float] {
        let dense = try Dense(name: "fc", inputShape: [512], outFeatures: 256, bias: false, initializer: initializer)
        let model = Model(layers: [dense], inputShape: [512])
        model.initialize(seed: seed)
        return Array(model.parameters.entries[0].values)
    }

    func testRandomInitializersMatchTheirFormulas() throws {
        let fanIn = 512.0, fanOut = 256.0
        // (initialiser, target standard deviation, bound for uniform draws)
        let cases: [(Initializer, Double, Double?)] = [
            (.heNormal, (2 / fanIn).squareRoot(), nil),
            (.heUniform, (2 / fanIn).squareRoot(), (6 / fanIn).squareRoot()),
            (.xavierNormal, (2 / (fanIn + fanOut)).squareRoot(), nil),
            (.xavierUniform, (2 / (fanIn + fanOut)).squareRoot(), (6 / (fanIn + fanOut)).squareRoot()),
            (.torchDefault, (1 / (3 * fanIn)).squareRoot(), 1 / fanIn.squareRoot()),
            (.lecunNormal, (1 / fanIn).squareRoot(), nil),
            (.lecunUniform, (1 / fanIn).squareRoot(), (3 / fanIn).squareRoot()),
        ]
        XCTAssertEqual(Set(cases.map { $0.0 }), Set(Initializer.random), "every initialiser a config may ask for is checked")
        for (initializer, std, bound) in cases {
            let w = try weights(initializer).map(Double.init)
            let n = Double(w.count)
            let mean = w.reduce(0, +) / n
            let sd = (w.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / n).squareRoot()
            // With n = 131,072 draws the sample mean's standard error is std/362 and the sample
            // standard deviation's relative error is about 1/√(2n) = 0.2 %: 2 % and 5·std/362
            // are each more than eight standard errors, so these fail only on a wrong formula.
            XCTAssertEqual(sd / std, 1, accuracy: 0.02, "\(initializer): std \(sd), expected \(std)")
            XCTAssertEqual(mean, 0, accuracy: 5 * std / 362, "\(initializer): mean \(mean)")
            if let bound {
                let largest = w.map(abs).max()!
                XCTAssertLessThanOrEqual(largest, bound * (1 + 1e-6), "\(initializer) leaves its bound")
                XCTAssertGreaterThan(largest, bound * 0.99, "\(initializer) does not fill its bound")
            } else {
                // A normal draw has values beyond 4σ about once in 16,000: a few here, and none
                // beyond 6σ (a uniform draw of the same std never passes 1.74σ).
                let beyond = w.filter { abs($0) > 4 * std }.count
                XCTAssertGreaterThan(beyond, 0, "\(initializer) has no tail: not a normal draw")
                XCTAssertLessThan(w.map(abs).max()!, 6 * std)
            }
        }
    }

    func testDrawsAreKeyedBySeed() throws {
        XCTAssertEqual(try weights(.heNormal, seed: 3), try weights(.heNormal, seed: 3))
        XCTAssertNotEqual(try weights(.heNormal, seed: 3), try weights(.heNormal, seed: 4))
    }

    func testDefaultInitializerFollowsTheActivation() throws {
        let builder = ModelBuilder(communicator: SingleProcessCommunicator())
        func initializers(_ specs: [LayerSpec]) throws -> [Initializer] {
            let model = try builder.build(specs, inputShape: [8])
            return model.parameters.entries.filter { $0.name.hasSuffix(".weight") && $0.shape.count > 1 }.map { $0.initializer }
        }
        let dense = LayerSpec.dense(out: 8, bias: true, initializer: nil)
        XCTAssertEqual(try initializers([dense, .batchNorm(momentum: 0.1, epsilon: 1e-5), .relu, dense]),
                       [.heNormal, .heNormal])
        XCTAssertEqual(try initializers([dense, .tanh, dense, .sigmoid, dense]),
                       [.xavierNormal, .xavierNormal, .heNormal])
        XCTAssertEqual(try initializers([.dense(out: 8, bias: true, initializer: .torchDefault), .tanh]), [.torchDefault])
    }
}
