// Optimizer steps against hand-computed references on a three-element arena, and schedules.
//
// The arena holds w = [1, −2] (a weight: isWeight, so decayed when decay applies to weights only)
// and b = [0.5] (a bias). Two steps use gradients g₁ = [0.1, 0.2, −0.3] and g₂ = [−0.05, 0.4, 0.1]
// with learning rate 0.1. The reference numbers follow PyTorch's formulations (torch.optim.SGD,
// Adam, AdamW) and were computed in float64 with the float32-rounded hyperparameters.
import Foundation
import NN
import Optimizers
import TestSupport
import XCTest

final class OptimizerTests: XCTestCase {
    static let initial: [Float] = [1.0, -2.0, 0.5]
    static let g1: [Float] = [0.1, 0.2, -0.3]
    static let g2: [Float] = [-0.05, 0.4, 0.1]

    func makeArena() -> Arena {
        let weight = Parameter(name: "fc.weight", shape: [2], initializer: .zeros, fanIn: 1, fanOut: 2, isWeight: true)
        let bias = Parameter(name: "fc.bias", shape: [1], initializer: .zeros)
        let arena = Arena([weight, bias], withGradients: true)
        XCTAssertEqual(arena.count, 3)
        for i in 0..<3 { arena.flatValues[i] = Self.initial[i] }
        return arena
    }

    func setGradients(_ arena: Arena, _ g: [Float]) {
        for i in 0..<3 { arena.flatGrads[i] = g[i] }
    }

    /// Runs `optimizer` over the gradient sequence and returns the parameter values.
    func steps(_ arena: Arena, _ optimizer: Optimizer, _ gradients: [[Float]], rate: Float = 0.1) -> [Float] {
        for g in gradients {
            setGradients(arena, g)
            optimizer.step(rate: rate)
        }
        return Array(arena.flatValues)
    }

    // MARK: SGD

    func testPlainSGD() {
        let arena = makeArena()
        let sgd = SGD(arena: arena)
        XCTAssertTrue(sgd.state.isEmpty, "plain SGD keeps no state")
        // w ← w − η·g
        assertClose(steps(arena, sgd, [Self.g1]), [0.99, -2.02, 0.53], tolerance: 1e-6)
        assertClose(steps(arena, sgd, [Self.g2]), [0.995, -2.06, 0.52], tolerance: 1e-6)
        XCTAssertEqual(sgd.stepCount, 2)
    }

    func testSGDMomentum() {
        // v₁ = g₁, w₁ = w₀ − η·v₁; v₂ = 0.9·v₁ + g₂ = [0.04, 0.58, −0.17], w₂ = w₁ − η·v₂.
        let arena = makeArena()
        let sgd = SGD(arena: arena, momentum: 0.9)
        assertClose(steps(arena, sgd, [Self.g1, Self.g2]), [0.986, -2.078, 0.547], tolerance: 1e-6)
        XCTAssertEqual(sgd.state.map { $0.name }, ["momentum"])
        assertClose(Array(sgd.state[0].values), [0.04, 0.58, -0.17], tolerance: 1e-6)
    }

    func testSGDNesterov() {
        // Update with g + μ·v: step 1 uses 1.9·g₁; step 2 uses g₂ + 0.9·[0.04, 0.58, −0.17].
        let arena = makeArena()
        let sgd = SGD(arena: arena, momentum: 0.9, nesterov: true)
        assertClose(steps(arena, sgd, [Self.g1, Self.g2]), [0.9824, -2.1302, 0.5623], tolerance: 1e-6)
    }

    func testSGDWeightDecay() {
        // g ← g + λ·w with λ = 0.01: [0.11, 0.18, −0.295].
        let arena = makeArena()
        let sgd = SGD(arena: arena, weightDecay: 0.01)
        assertClose(steps(arena, sgd, [Self.g1]), [0.989, -2.018, 0.5295], tolerance: 1e-6)
    }

    func testSGDWeightDecayOnWeightsOnly() {
        let arena = makeArena()
        let sgd = SGD(arena: arena, weightDecay: 0.01, decayWeightsOnly: true)
        assertClose(steps(arena, sgd, [Self.g1]), [0.989, -2.018, 0.53], tolerance: 1e-6,
                    "the bias (isWeight false) must not be decayed")
    }

    func testSGDMomentumWithWeightDecay() {
        let arena = makeArena()
        let sgd = SGD(arena: arena, momentum: 0.9, weightDecay: 0.01)
        assertClose(steps(arena, sgd, [Self.g1, Self.g2]), [0.983111, -2.072182, 0.5455205], tolerance: 1e-6)
        assertClose(Array(sgd.state[0].values), [0.05889, 0.54182, -0.160205], tolerance: 1e-6)
    }

    // MARK: Adam / AdamW

    func testAdamFirstStepMovesByLearningRate() {
        // After one step m̂ = g and v̂ = g², so every element moves by η·sign(g) (up to ε).
        let arena = makeArena()
        let adam = Adam(arena: arena)
        assertClose(steps(arena, adam, [Self.g1]), [0.9, -2.1, 0.6], tolerance: 1e-6)
        XCTAssertEqual(adam.stepCount, 1)
        XCTAssertEqual(adam.state.map { $0.name }, ["adam_m", "adam_v"])
        assertClose(Array(adam.state[0].values), [0.01, 0.02, -0.03], tolerance: 1e-6)
        assertClose(Array(adam.state[1].values), [1e-5, 4e-5, 9e-5], tolerance: 1e-4, floor: 0)
    }

    func testAdamTwoSteps() {
        let arena = makeArena()
        let adam = Adam(arena: arena)
        assertClose(steps(arena, adam, [Self.g1, Self.g2]), [0.87336631, -2.1965182, 0.64002185], tolerance: 1e-5)
        XCTAssertEqual(adam.stepCount, 2)
    }

    func testAdamFillsAMirrorOnlyForAStepOverTheWholeArena() {
        // The mirror (a checkpoint's image) gets the parameters and both moments as the update
        // leaves them, for that one step; a step over a shard's range leaves it unwritten.
        let arena = makeArena(), adam = Adam(arena: arena)
        let image = [Float](repeating: .nan, count: 9)
        var mirror = image
        mirror.withUnsafeMutableBufferPointer { out in
            let m = UpdateMirror(values: out.baseAddress!, state: [out.baseAddress! + 3, out.baseAddress! + 6])
            adam.mirror = m
            setGradients(arena, Self.g1)
            adam.step(rate: 0.1)
            XCTAssertTrue(m.written)
            XCTAssertNil(adam.mirror, "one step only")
        }
        XCTAssertEqual(mirror.map(\.bitPattern), (Array(arena.flatValues) + Array(adam.state[0].values) + Array(adam.state[1].values)).map(\.bitPattern))

        var untouched = image
        untouched.withUnsafeMutableBufferPointer { out in
            let m = UpdateMirror(values: out.baseAddress!, state: [out.baseAddress! + 3, out.baseAddress! + 6])
            adam.mirror = m
            adam.step(rate: 0.1, within: 0..<2)
            XCTAssertFalse(m.written, "a part of the arena does not fill the image")
        }
        XCTAssertTrue(untouched.allSatisfy(\.isNaN))
    }

    func testEveryOptimizerFillsAMirrorWithTheBitsOfThePlainStep() {
        // 5,000 elements cross the 2,048-element blocks a mirrored step runs in; the step with a
        // mirror must leave the bits of the step without one, and the image must hold them:
        // the parameters, then each state tensor.
        let n = 5000
        let makers: [(String, (Arena) -> MirroringOptimizer)] = [
            ("sgd momentum", { SGD(arena: $0, momentum: 0.9, weightDecay: 1e-3, decayWeightsOnly: true) }),
            ("sgd", { SGD(arena: $0, weightDecay: 1e-3) }),
            ("adagrad", { AdaGrad(arena: $0, weightDecay: 1e-3) }),
            ("rmsprop centered momentum", { RMSProp(arena: $0, momentum: 0.9, centered: true, weightDecay: 1e-3) }),
            ("rmsprop", { RMSProp(arena: $0) }),
            ("adam", { Adam(arena: $0, weightDecay: 1e-3) }),
        ]
        for (name, make) in makers {
            func arena() -> Arena {
                let w = Parameter(name: "fc.weight", shape: [n - 7], initializer: .zeros, fanIn: 1, fanOut: 1, isWeight: true)
                let b = Parameter(name: "fc.bias", shape: [7], initializer: .zeros)
                let a = Arena([w, b], withGradients: true)
                for i in 0..<a.count { a.flatValues[i] = Float(i % 97) * 0.01 - 0.4; a.flatGrads[i] = Float(i % 31) * 0.003 - 0.04 }
                return a
            }
            let plainArena = arena(), mirroredArena = arena()
            let plain = make(plainArena), mirrored = make(mirroredArena)
            plain.step(rate: 0.1)
            mirrored.step(rate: 0.1)   // a step without a mirror first, so the state is not zero
            let states = mirrored.state.count
            var image = [Float](repeating: .nan, count: (1 + states) * n)
            image.withUnsafeMutableBufferPointer { out in
                let m = UpdateMirror(values: out.baseAddress!, state: (0..<states).map { out.baseAddress! + (1 + $0) * n })
                mirrored.mirror = m
                plain.step(rate: 0.1)
                mirrored.step(rate: 0.1)
                XCTAssertTrue(m.written, name)
                XCTAssertNil(mirrored.mirror, "\(name): one step only")
            }
            XCTAssertEqual(Array(mirroredArena.flatValues).map(\.bitPattern), Array(plainArena.flatValues).map(\.bitPattern), name)
            let want = Array(plainArena.flatValues) + plain.state.flatMap { Array($0.values) }
            XCTAssertEqual(image.map(\.bitPattern), want.map(\.bitPattern), name)
        }
    }

    func testAdamWithL2WeightDecay() {
        // Coupled: g ← g + λ·w before the moments (λ = 0.1, all elements).
        let arena = makeArena()
        let adam = Adam(arena: arena, weightDecay: 0.1)
        assertClose(steps(arena, adam, [Self.g1, Self.g2]), [0.81969591, -2.0744137, 0.61630167], tolerance: 1e-5)
    }

    func testAdamWDecoupledWeightDecayOnWeightsOnly() {
        // Decoupled: w ← w − η·λ·w, then the Adam step on the raw gradient; the bias is exempt,
        // so it follows the undecayed Adam trajectory exactly.
        let arena = makeArena()
        let adamW = Adam(arena: arena, weightDecay: 0.1, decoupled: true, decayWeightsOnly: true)
        assertClose(steps(arena, adamW, [Self.g1, Self.g2]), [0.85446631, -2.1557182, 0.64002185], tolerance: 1e-5)
    }

    // MARK: Adaptive rates (torch.optim.Adagrad, torch.optim.RMSprop)

    func testAdaGradTwoSteps() {
        // s ← s + g²; w ← w − η·g/(√s + ε): the first step moves every element by η·sign(g).
        let arena = makeArena()
        let adagrad = AdaGrad(arena: arena)
        assertClose(steps(arena, adagrad, [Self.g1, Self.g2]), [0.94472136, -2.1894427, 0.56837723], tolerance: 1e-5)
        XCTAssertEqual(adagrad.state.map { $0.name }, ["adagrad_sum"])
    }

    func testRMSPropTwoSteps() {
        // α = 0.99: after one step v = 0.01·g², so the first step is η·g/(0.1·|g|) = 10·η·sign(g).
        let arena = makeArena()
        let rms = RMSProp(arena: arena)
        assertClose(steps(arena, rms, [Self.g1, Self.g2]), [0.44901358, -3.8953232, 1.1823396], tolerance: 1e-5)
    }

    func testRMSPropCenteredWithMomentumAndWeightDecay() {
        let arena = makeArena()
        let rms = RMSProp(arena: arena, momentum: 0.9, centered: true, weightDecay: 0.1)
        // The centered denominator v − ḡ² cancels about 1% of v and momentum sums the scaled
        // steps: float32 lands within ~1e-5 here; 1e-4 keeps a margin and still catches any wrong
        // term (each changes these numbers by more than 1e-2).
        assertClose(steps(arena, rms, [Self.g1, Self.g2]), [-0.66294202, -3.0050378, 1.6999808], tolerance: 1e-4)
        XCTAssertEqual(rms.state.map { $0.name }, ["rmsprop_square", "rmsprop_average", "rmsprop_momentum"])
    }

    // MARK: Learning-rate schedules

    func testConstantSchedule() {
        let s = LearningRateSchedule(kind: .constant, baseRate: 0.05, totalSteps: 100)
        for step in [0, 1, 50, 99, 1000] { XCTAssertEqual(s.rate(at: step), 0.05, accuracy: 1e-15, "step \(step)") }
    }

    func testStepSchedule() {
        let s = LearningRateSchedule(kind: .step, baseRate: 0.1, totalSteps: 100, stepSize: 10, gamma: 0.5)
        let expected: [(Int, Double)] = [(0, 0.1), (9, 0.1), (10, 0.05), (19, 0.05), (25, 0.025), (30, 0.0125)]
        for (step, rate) in expected { XCTAssertEqual(s.rate(at: step), rate, accuracy: 1e-15, "step \(step)") }
    }

    func testCosineSchedule() {
        let s = LearningRateSchedule(kind: .cosine, baseRate: 1, totalSteps: 100, minRate: 0.1)
        // rate = min + (base − min)·(1 + cos(π·t/T))/2
        let expected: [(Int, Double)] = [
            (0, 1), (25, 0.1 + 0.9 * 0.8535533905932737), (50, 0.55), (100, 0.1), (150, 0.1),
        ]
        for (step, rate) in expected { XCTAssertEqual(s.rate(at: step), rate, accuracy: 1e-12, "step \(step)") }
    }

    func testLinearWarmupThenCosine() {
        let s = LearningRateSchedule(kind: .cosine, baseRate: 1, totalSteps: 110, warmupSteps: 10)
        // Warm-up: base·(step + 1)/warmup, reaching the base rate on the last warm-up step;
        // then the cosine runs over the remaining 100 steps.
        let expected: [(Int, Double)] = [(0, 0.1), (4, 0.5), (9, 1), (10, 1), (60, 0.5), (110, 0)]
        for (step, rate) in expected { XCTAssertEqual(s.rate(at: step), rate, accuracy: 1e-12, "step \(step)") }
    }

    func testWarmupThenStep() {
        let s = LearningRateSchedule(kind: .step, baseRate: 0.2, totalSteps: 100, warmupSteps: 4, stepSize: 5, gamma: 0.1)
        let expected: [(Int, Double)] = [(0, 0.05), (3, 0.2), (4, 0.2), (8, 0.2), (9, 0.02), (14, 0.002)]
        for (step, rate) in expected { XCTAssertEqual(s.rate(at: step), rate, accuracy: 1e-12, "step \(step)") }
    }
}
