// Layer tests: finite-difference gradient checks of every layer family and of the loss, plus
// forward references (naive convolution and matmul), batch-norm statistics and dropout masks.
import Foundation
import Collectives
@testable import NN
import TensorCore
import TestSupport
import XCTest

/// A training context whose global sample indices are not simply 0..<n.
func trainingContext(batch n: Int, seed: UInt64 = 42, epoch: Int = 1) -> ForwardContext {
    ForwardContext(mode: .training, seed: seed, epoch: epoch, sampleIndices: (0..<n).map { 100 + 7 * $0 })
}

/// A model around `layers` with its arena built, initialised, and every parameter randomised
/// (so that γ = 1, β = 0 and zero biases do not hide terms of the gradient).
func makeModel(_ layers: [Layer], inputShape: [Int], seed: UInt64 = 1, randomize: Bool = true) -> Model {
    let model = Model(layers: layers, inputShape: inputShape)
    model.initialize(seed: seed)
    if randomize { randomizeParameters(model, seed: seed &+ 1000) }
    return model
}

/// Distinct values 0.05 apart in a scrambled order (i·37 mod count is a permutation when count is
/// not a multiple of 37), so that max pooling's arg-max never changes under a ±1e-2 perturbation.
func distinctValues(_ shape: [Int]) -> Tensor {
    let t = Tensor(zeros: shape)
    let n = t.count
    precondition(n % 37 != 0)
    for i in 0..<n { t[i] = Float((i * 37) % n) * 0.05 - Float(n) * 0.025 }
    return t
}

final class LayerGradientTests: XCTestCase {
    // MARK: Dense

    func testDenseWithBiasGradients() throws {
        let dense = try Dense(name: "fc", inputShape: [5], outFeatures: 4, bias: true)
        let model = makeModel([dense], inputShape: [5])
        XCTAssertEqual(model.parameters.entries.map { $0.name }, ["fc.weight", "fc.bias"])
        checkGradients(model: model, input: randomTensor([3, 5], seed: 1), context: trainingContext(batch: 3))
    }

    func testDenseWithoutBiasGradients() throws {
        let dense = try Dense(name: "fc", inputShape: [4], outFeatures: 3, bias: false)
        let model = makeModel([dense], inputShape: [4])
        XCTAssertEqual(model.parameters.entries.map { $0.name }, ["fc.weight"])
        checkGradients(model: model, input: randomTensor([2, 4], seed: 2), context: trainingContext(batch: 2))
    }

    func testFlattenThenDenseGradients() throws {
        let flatten = Flatten(name: "flat", inputShape: [2, 3, 2])
        let dense = try Dense(name: "fc", inputShape: flatten.outputShape, outFeatures: 4)
        XCTAssertEqual(flatten.outputShape, [12])
        let model = makeModel([flatten, dense], inputShape: [2, 3, 2])
        checkGradients(model: model, input: randomTensor([2, 2, 3, 2], seed: 3), context: trainingContext(batch: 2))
    }

    // MARK: Conv2D

    func testConv2DStride1Padding1Gradients() throws {
        let conv = try Conv2D(name: "conv", inputShape: [2, 4, 5], outChannels: 3, kernel: 3, stride: 1, padding: 1)
        XCTAssertEqual(conv.outputShape, [3, 4, 5])
        let model = makeModel([conv], inputShape: [2, 4, 5])
        checkGradients(model: model, input: randomTensor([2, 2, 4, 5], seed: 4), context: trainingContext(batch: 2))
    }

    func testConv2DStride2Padding1Gradients() throws {
        let conv = try Conv2D(name: "conv", inputShape: [3, 5, 5], outChannels: 2, kernel: 3, stride: 2, padding: 1)
        XCTAssertEqual(conv.outputShape, [2, 3, 3])
        let model = makeModel([conv], inputShape: [3, 5, 5])
        checkGradients(model: model, input: randomTensor([3, 3, 5, 5], seed: 5), context: trainingContext(batch: 3))
    }

    func testConv2DNoPaddingNoBiasGradients() throws {
        let conv = try Conv2D(name: "conv", inputShape: [2, 4, 4], outChannels: 2, kernel: 3, stride: 1, padding: 0,
                              bias: false)
        XCTAssertEqual(conv.outputShape, [2, 2, 2])
        XCTAssertNil(conv.bias)
        let model = makeModel([conv], inputShape: [2, 4, 4])
        checkGradients(model: model, input: randomTensor([2, 2, 4, 4], seed: 6), context: trainingContext(batch: 2))
    }

    // MARK: Pooling

    func testMaxPoolGradients() throws {
        let pool = try MaxPool2D(name: "pool", inputShape: [2, 4, 4], size: 2)
        XCTAssertEqual(pool.outputShape, [2, 2, 2])
        let model = makeModel([pool], inputShape: [2, 4, 4])
        checkGradients(model: model, input: distinctValues([2, 2, 4, 4]), context: trainingContext(batch: 2))
    }

    func testMaxPoolOverlappingWindowsGradients() throws {
        // Size 3, stride 2 on 5×5: windows share a row and a column, so gradients must accumulate.
        let pool = try MaxPool2D(name: "pool", inputShape: [2, 5, 5], size: 3, stride: 2)
        XCTAssertEqual(pool.outputShape, [2, 2, 2])
        let model = makeModel([pool], inputShape: [2, 5, 5])
        checkGradients(model: model, input: distinctValues([2, 2, 5, 5]), context: trainingContext(batch: 2))
    }

    func testAvgPoolGradients() throws {
        let pool = try AvgPool2D(name: "pool", inputShape: [2, 4, 4], size: 2)
        let model = makeModel([pool], inputShape: [2, 4, 4])
        checkGradients(model: model, input: randomTensor([2, 2, 4, 4], seed: 7), context: trainingContext(batch: 2))
    }

    func testAvgPoolOverlappingWindowsGradients() throws {
        let pool = try AvgPool2D(name: "pool", inputShape: [2, 5, 5], size: 3, stride: 2)
        XCTAssertEqual(pool.outputShape, [2, 2, 2])
        let model = makeModel([pool], inputShape: [2, 5, 5])
        checkGradients(model: model, input: randomTensor([2, 2, 5, 5], seed: 8), context: trainingContext(batch: 2))
    }

    func testGlobalAvgPoolGradients() throws {
        let pool = try GlobalAvgPool(name: "gap", inputShape: [3, 2, 3])
        XCTAssertEqual(pool.outputShape, [3])
        let model = makeModel([pool], inputShape: [3, 2, 3])
        checkGradients(model: model, input: randomTensor([2, 3, 2, 3], seed: 9), context: trainingContext(batch: 2))
    }

    // MARK: BatchNorm (training mode: batch statistics)

    func testBatchNorm2DTrainingGradients() throws {
        let bn = try BatchNorm(name: "bn", inputShape: [3])
        let model = makeModel([bn], inputShape: [3])
        checkGradients(model: model, input: randomTensor([4, 3], seed: 10), context: trainingContext(batch: 4))
    }

    func testBatchNorm4DTrainingGradients() throws {
        let bn = try BatchNorm(name: "bn", inputShape: [2, 3, 3])
        let model = makeModel([bn], inputShape: [2, 3, 3])
        checkGradients(model: model, input: randomTensor([2, 2, 3, 3], seed: 11), context: trainingContext(batch: 2))
    }

    func testSmallNetworkGradients() throws {
        // conv → batchnorm → tanh → avgpool → flatten → dense: the layers composed through Model.
        // The conv has no bias: batch norm removes any per-channel constant, so its gradient is 0.
        let conv = try Conv2D(name: "conv", inputShape: [2, 4, 4], outChannels: 3, kernel: 3, padding: 1, bias: false)
        let bn = try BatchNorm(name: "bn", inputShape: conv.outputShape)
        let activation = Tanh(name: "tanh", inputShape: bn.outputShape)
        let pool = try AvgPool2D(name: "pool", inputShape: activation.outputShape, size: 2)
        let flatten = Flatten(name: "flat", inputShape: pool.outputShape)
        let dense = try Dense(name: "fc", inputShape: flatten.outputShape, outFeatures: 3)
        let model = makeModel([conv, bn, activation, pool, flatten, dense], inputShape: [2, 4, 4])
        checkGradients(model: model, input: randomTensor([2, 2, 4, 4], seed: 12), context: trainingContext(batch: 2))
    }

    func testResidualBlockGradients() throws {
        // An identity shortcut around conv → batchnorm → tanh → conv, then a projected block
        // (stride-2 conv inside, 1×1 strided conv + batchnorm on the shortcut), then a dense head.
        let builder = ModelBuilder(communicator: SingleProcessCommunicator())
        let specs: [LayerSpec] = [
            .residual(layers: [.conv(out: 2, kernel: 3, stride: 1, padding: 1, bias: false, initializer: nil),
                               .batchNorm(momentum: 0.1, epsilon: 1e-5), .tanh,
                               .conv(out: 2, kernel: 3, stride: 1, padding: 1, bias: true, initializer: nil)], projection: .auto),
            .tanh,
            .residual(layers: [.conv(out: 3, kernel: 3, stride: 2, padding: 1, bias: false, initializer: nil), .tanh], projection: .auto),
            .flatten, .dense(out: 2, bias: true, initializer: nil),
        ]
        let model = try builder.build(specs, inputShape: [2, 4, 4])
        XCTAssertEqual(model.layers.map { $0.name }, ["residual1", "tanh1", "residual2", "flatten1", "dense1"])
        XCTAssertEqual((model.layers[0] as? Residual)?.shortcut.count, 0, "same shape: identity shortcut")
        XCTAssertEqual((model.layers[2] as? Residual)?.shortcut.map { $0.name }, ["residual2.shortcut.conv", "residual2.shortcut.batchnorm"])
        XCTAssertTrue(model.parameters.entries.map { $0.name }.contains("residual1.conv2.bias"))
        model.initialize(seed: 3)
        checkGradients(model: model, input: randomTensor([3, 2, 4, 4], seed: 19), context: trainingContext(batch: 3))
    }

    func testResidualShapeMismatchWithoutProjectionIsAnError() {
        let builder = ModelBuilder(communicator: SingleProcessCommunicator())
        XCTAssertThrowsError(try builder.build([.residual(layers: [.conv(out: 4, kernel: 1, stride: 1, padding: 0, bias: false, initializer: nil)],
                                                          projection: .never)], inputShape: [2, 3, 3])) {
            XCTAssertTrue("\($0)".contains("residual1: the inner layers give [4, 3, 3] but the shortcut gives [2, 3, 3]"), "\($0)")
        }
    }

    // MARK: Activations (inputs kept ≥ 0.2 away from the kink at 0)

    func testReLUGradients() throws {
        let model = makeModel([ReLU(name: "relu", inputShape: [4])], inputShape: [4])
        let x = randomTensorAwayFromZero([3, 4], seed: 13)
        XCTAssertTrue(x.array.contains { $0 < 0 } && x.array.contains { $0 > 0 })
        checkGradients(model: model, input: x, context: trainingContext(batch: 3))
    }

    func testLeakyReLUGradients() throws {
        let model = makeModel([LeakyReLU(name: "leaky", inputShape: [2, 3], slope: 0.1)], inputShape: [2, 3])
        checkGradients(model: model, input: randomTensorAwayFromZero([3, 2, 3], seed: 14), context: trainingContext(batch: 3))
    }

    func testPReLUPerChannelGradients() throws {
        let prelu = PReLU(name: "prelu", inputShape: [3, 2, 2], perChannel: true)
        XCTAssertEqual(prelu.slope.shape, [3])
        let model = makeModel([prelu], inputShape: [3, 2, 2])
        setValues(prelu.slope, [0.1, 0.3, 0.6])
        checkGradients(model: model, input: randomTensorAwayFromZero([2, 3, 2, 2], seed: 15), context: trainingContext(batch: 2))
    }

    func testPReLUSharedSlopeGradients() throws {
        let prelu = PReLU(name: "prelu", inputShape: [5], perChannel: false)
        XCTAssertEqual(prelu.slope.shape, [1])
        let model = makeModel([prelu], inputShape: [5])
        setValues(prelu.slope, [0.2])
        checkGradients(model: model, input: randomTensorAwayFromZero([3, 5], seed: 16), context: trainingContext(batch: 3))
    }

    func testPReLUPerChannelForward() throws {
        // Channel c's negative inputs are scaled by slope c and only by it.
        let prelu = PReLU(name: "prelu", inputShape: [2, 2], perChannel: true)
        let model = makeModel([prelu], inputShape: [2, 2], randomize: false)
        XCTAssertEqual(Array(prelu.slope.values), [0.25, 0.25], "PReLU's conventional initial slope")
        setValues(prelu.slope, [0.1, 0.5])
        let x = Tensor(shape: [1, 2, 2], values: [-1, 2, -4, 3])
        let y = try model.forward(x, context: trainingContext(batch: 1)).array
        XCTAssertEqual(y, [-0.1, 2, -2, 3])
    }

    func testSigmoidGradients() throws {
        let model = makeModel([Sigmoid(name: "sigmoid", inputShape: [5])], inputShape: [5])
        checkGradients(model: model, input: randomTensor([3, 5], seed: 17, scale: 1.5), context: trainingContext(batch: 3))
    }

    func testTanhGradients() throws {
        let model = makeModel([Tanh(name: "tanh", inputShape: [5])], inputShape: [5])
        checkGradients(model: model, input: randomTensor([3, 5], seed: 18, scale: 1.5), context: trainingContext(batch: 3))
    }

    func testSmoothActivationGradients() throws {
        // Inputs spread over ±3 (scale 1.5 normal), both sides of each kink-free curve.
        let layers: [Layer] = [ELU(name: "elu", inputShape: [6], alpha: 0.7), GELU(name: "gelu", inputShape: [6]),
                               SiLU(name: "silu", inputShape: [6]), Softplus(name: "softplus", inputShape: [6])]
        for (k, layer) in layers.enumerated() {
            let model = makeModel([layer], inputShape: [6])
            checkGradients(model: model, input: randomTensor([3, 6], seed: 40 + UInt64(k), scale: 1.5), context: trainingContext(batch: 3))
        }
    }

    func testSmoothActivationValuesAgainstReferenceNumbers() throws {
        // Reference values computed in float64 with Python's math module from the definitions (tanh
        // GELU, x·σ(x), log1p(exp(x)), α·expm1(x)); float32 evaluation of values below 2 is within
        // a few ulps (≤ 2.4e-7 each), so 1e-6 catches any wrong formula or constant.
        let x: [Float] = [-2, -0.5, 0, 0.5, 2]
        let cases: [(Layer, [Float])] = [
            (ELU(name: "elu", inputShape: [5], alpha: 1), [-0.864664717, -0.393469340, 0, 0.5, 2]),
            (GELU(name: "gelu", inputShape: [5]), [-0.045402306, -0.154285990, 0, 0.345714010, 1.954597694]),
            (SiLU(name: "silu", inputShape: [5]), [-0.238405844, -0.188770334, 0, 0.311229666, 1.761594156]),
            (Softplus(name: "softplus", inputShape: [5]), [0.126928011, 0.474076984, 0.693147181, 0.974076984, 2.126928011]),
        ]
        for (layer, expected) in cases {
            let y = try layer.forward(Tensor(shape: [1, 5], values: x), context: trainingContext(batch: 1)).array
            for i in 0..<5 { XCTAssertEqual(y[i], expected[i], accuracy: 1e-6, "\(layer.name)(\(x[i]))") }
        }
        // Softplus does not overflow where exp(x) does.
        let big = try Softplus(name: "softplus", inputShape: [1]).forward(Tensor(shape: [1, 1], values: [100]), context: trainingContext(batch: 1))
        XCTAssertEqual(big.array[0], 100)
    }

    // MARK: Dropout (same context → same mask, so finite differences are valid)

    func testDropoutTrainingGradients() throws {
        let dense = try Dense(name: "fc", inputShape: [5], outFeatures: 6)
        let dropout = try Dropout(name: "drop", inputShape: [6], probability: 0.3, layerIndex: 1)
        let model = makeModel([dense, dropout], inputShape: [5])
        let x = randomTensor([3, 5], seed: 19)
        let context = trainingContext(batch: 3)
        let y = try model.forward(x, context: context).array
        let dropped = y.filter { $0 == 0 }.count
        XCTAssertGreaterThan(dropped, 0, "the mask must drop something for the check to mean anything")
        XCTAssertLessThan(dropped, y.count)
        checkGradients(model: model, input: x, context: context)
    }
}

// MARK: - Softmax cross-entropy

final class SoftmaxCrossEntropyTests: XCTestCase {
    /// Compares the loss's gradient with central differences of lossSum / normalizer.
    func checkLossGradient(classes k: Int, batch n: Int, normalizer: Int, smoothing: Float,
                           labels: [Int32]?, targets: Tensor?, file: StaticString = #filePath, line: UInt = #line) {
        let ce = SoftmaxCrossEntropy(classes: k, labelSmoothing: smoothing)
        let logits = randomTensor([n, k], seed: 21, scale: 2)
        func evaluate() -> (loss: Double, gradient: [Float]) {
            let pair: (LossResult, Tensor)
            if let labels {
                pair = labels.withUnsafeBufferPointer {
                    ce.forward(logits: logits, labels: $0, normalizer: normalizer)
                }
            } else {
                pair = ce.forward(logits: logits, targets: targets!, normalizer: normalizer)
            }
            let (result, gradient) = pair
            XCTAssertEqual(result.count, n, file: file, line: line)
            return (result.lossSum / Double(normalizer), gradient.array)
        }
        let (loss0, analytic) = evaluate()
        XCTAssertTrue(loss0.isFinite && loss0 > 0, "loss \(loss0)", file: file, line: line)
        let h: Float = 1e-2
        var numeric = [Float](repeating: 0, count: n * k)
        for i in 0..<(n * k) {
            let saved = logits[i]
            let plus = saved + h, minus = saved - h
            logits[i] = plus
            let lp = evaluate().loss
            logits[i] = minus
            let lm = evaluate().loss
            logits[i] = saved
            numeric[i] = Float((lp - lm) / (Double(plus) - Double(minus)))
        }
        // Per-sample losses are float32 (error ≈ a few ε·|loss|), so the quotient's noise is
        // ≈ 4ε·Σloss / (normalizer·h); truncation h²·|f‴|/6 is ≈ 1e-5 for log-softmax.
        let noise = Float(4 * Double(Float.ulpOfOne) * loss0 / Double(h))
        compareGradients(analytic: analytic, numeric: numeric, what: "dLoss/dLogits", tolerance: 1e-2, noise: noise,
                         file: file, line: line)
    }

    func testIntegerLabelGradient() {
        checkLossGradient(classes: 4, batch: 3, normalizer: 3, smoothing: 0, labels: [2, 0, 3], targets: nil)
    }

    func testIntegerLabelGradientWithGlobalNormalizer() {
        // The normalizer is the global batch (here larger than the local batch).
        checkLossGradient(classes: 4, batch: 3, normalizer: 8, smoothing: 0, labels: [1, 1, 0], targets: nil)
    }

    func testLabelSmoothingGradient() {
        checkLossGradient(classes: 5, batch: 3, normalizer: 3, smoothing: 0.1, labels: [4, 2, 0], targets: nil)
    }

    func testSoftTargetGradient() {
        let targets = softTargets(rows: 3, classes: 4)
        checkLossGradient(classes: 4, batch: 3, normalizer: 3, smoothing: 0, labels: nil, targets: targets)
        checkLossGradient(classes: 4, batch: 3, normalizer: 3, smoothing: 0.1, labels: nil, targets: targets)
    }

    func softTargets(rows: Int, classes k: Int) -> Tensor {
        let t = randomTensor([rows, k], seed: 22)
        for r in 0..<rows {
            var sum: Float = 0
            for j in 0..<k { t[r * k + j] = expf(t[r * k + j]); sum += t[r * k + j] }
            for j in 0..<k { t[r * k + j] /= sum }
        }
        return t
    }

    func testKnownValuesWithAndWithoutSmoothing() {
        // Logits [1, 2, 3] and [3, 1, 0] with labels 2 and 1; reference in Double.
        let logits = Tensor(shape: [2, 3], values: [1, 2, 3, 3, 1, 0])
        let labels: [Int32] = [2, 1]
        for eps in [0.0, 0.1] {
            let ce = SoftmaxCrossEntropy(classes: 3, labelSmoothing: Float(eps))
            let (result, gradient) = labels.withUnsafeBufferPointer {
                ce.forward(logits: logits, labels: $0, normalizer: 2)
            }
            var expectedLoss = 0.0
            var expectedGradient = [Float]()
            for r in 0..<2 {
                let z = (0..<3).map { Double(logits[r * 3 + $0]) }
                let logSum = log(z.map { exp($0) }.reduce(0, +))
                for j in 0..<3 {
                    let target = eps / 3 + (j == Int(labels[r]) ? 1 - eps : 0)
                    expectedLoss -= target * (z[j] - logSum)
                    expectedGradient.append(Float((exp(z[j] - logSum) - target) / 2))
                }
            }
            if eps == 0 {
                XCTAssertEqual(log(1 + exp(-1.0) + exp(-2.0)) + log(exp(3.0) + exp(1.0) + 1) - 1, expectedLoss,
                               accuracy: 1e-12, "reference sanity")
            }
            XCTAssertEqual(result.lossSum, expectedLoss, accuracy: 1e-5, "label smoothing \(eps)")
            XCTAssertEqual(result.correct, 1, "first row predicts class 2 (its label), second predicts 0 (label 1)")
            assertClose(gradient.array, expectedGradient, tolerance: 1e-5, "gradient, label smoothing \(eps)")
        }
    }
}

// MARK: - BatchNorm statistics

final class BatchNormStatisticsTests: XCTestCase {
    func testEvaluationUsesRunningStatistics() throws {
        let bn = try BatchNorm(name: "bn", inputShape: [2, 2, 2])
        let model = makeModel([bn], inputShape: [2, 2, 2], randomize: false)
        setValues(bn.gamma, [1.5, -0.5])
        setValues(bn.beta, [0.25, 1.0])
        setValues(bn.runningMean, [0.5, -1.0])
        setValues(bn.runningVar, [4.0, 0.25])
        let x = randomTensor([3, 2, 2, 2], seed: 30)
        let y = try model.forward(x, context: ForwardContext(mode: .evaluation)).array
        var expected = [Float]()
        let gamma = [1.5, -0.5], beta = [0.25, 1.0], mean = [0.5, -1.0], variance = [4.0, 0.25]
        for i in 0..<3 {
            for c in 0..<2 {
                for j in 0..<4 {
                    let v = Double(x[(i * 2 + c) * 4 + j])
                    let eps = Double(bn.epsilon)
                    expected.append(Float(gamma[c] * (v - mean[c]) / (variance[c] + eps).squareRoot() + beta[c]))
                }
            }
        }
        assertClose(y, expected, tolerance: 1e-5)
        XCTAssertEqual(Array(bn.runningMean.values), [0.5, -1.0], "evaluation must not touch running statistics")
        XCTAssertEqual(Array(bn.runningVar.values), [4.0, 0.25])
    }

    /// Mean and unbiased variance per channel of a (N, C, S) batch, in Double.
    func channelStatistics(_ x: Tensor, channels c: Int) -> (mean: [Double], unbiased: [Double], biased: [Double]) {
        let n = x.shape[0], s = x.count / (n * c)
        var mean = [Double](repeating: 0, count: c), m2 = [Double](repeating: 0, count: c)
        for ch in 0..<c {
            var sum = 0.0
            for i in 0..<n { for j in 0..<s { sum += Double(x[(i * c + ch) * s + j]) } }
            mean[ch] = sum / Double(n * s)
            for i in 0..<n { for j in 0..<s { let d = Double(x[(i * c + ch) * s + j]) - mean[ch]; m2[ch] += d * d } }
        }
        let count = Double(n * s)
        return (mean, m2.map { $0 / (count - 1) }, m2.map { $0 / count })
    }

    func checkRunningStatisticsUpdate(inputShape: [Int], batch: Int, momentum: Float) throws {
        let bn = try BatchNorm(name: "bn", inputShape: inputShape, momentum: momentum)
        let model = makeModel([bn], inputShape: inputShape, randomize: false)
        let c = inputShape[0]
        XCTAssertEqual(Array(bn.runningMean.values), [Float](repeating: 0, count: c))
        XCTAssertEqual(Array(bn.runningVar.values), [Float](repeating: 1, count: c))
        var expectedMean = [Double](repeating: 0, count: c), expectedVar = [Double](repeating: 1, count: c)
        let m = Double(momentum)
        for step in 0..<2 {
            let x = randomTensor([batch] + inputShape, seed: 40 + UInt64(step), scale: 2)
            for i in 0..<x.count { x[i] += 3 }  // a non-zero mean
            _ = try model.forward(x, context: trainingContext(batch: batch))
            let stats = channelStatistics(x, channels: c)
            for ch in 0..<c {
                expectedMean[ch] = (1 - m) * expectedMean[ch] + m * stats.mean[ch]
                expectedVar[ch] = (1 - m) * expectedVar[ch] + m * stats.unbiased[ch]
            }
            assertClose(Array(bn.runningMean.values), expectedMean.map { Float($0) }, tolerance: 1e-5,
                        "running mean after step \(step)")
            assertClose(Array(bn.runningVar.values), expectedVar.map { Float($0) }, tolerance: 1e-5,
                        "running variance (unbiased) after step \(step)")
        }
    }

    func testRunningStatisticsUpdate2D() throws {
        try checkRunningStatisticsUpdate(inputShape: [3], batch: 5, momentum: 0.1)
    }

    func testRunningStatisticsUpdate4D() throws {
        // count = N·H·W = 12 per channel: the unbiased factor is 12/11, not N/(N−1).
        try checkRunningStatisticsUpdate(inputShape: [2, 2, 3], batch: 2, momentum: 0.1)
    }

    func testRunningStatisticsUseMomentum() throws {
        try checkRunningStatisticsUpdate(inputShape: [2], batch: 4, momentum: 0.3)
    }

    /// Data with mean 1e4 and standard deviation 1: float32 E[x²] − E[x]² loses everything here (x² ≈ 1e8
    /// has a spacing of 8 in float32, far above the variance of 1).
    ///
    /// Tolerances. The reference is a Double two-pass computation on the same float32 inputs, so it is
    /// exact for them. The layer subtracts a float32 mean: near 1e4 float32 spacing is 2⁻¹⁰ ≈ 1e-3, so
    /// Float(mean) is off by ≤ 5e-4, plus up to ≈ 7e-3 when each sample's plane of S = 16 values is first
    /// summed in float32 (partial sums ≈ 1.6e5 have spacing 1.6e-2) — so normalised outputs (σ ≈ 1)
    /// agree to 1e-2 absolute. A mean error δ changes the variance by δ² ≤ 1e-4, hence 1e-3 relative
    /// for variances, invStd and running variances. A float32 E[x²] − E[x]² would be off by O(1–10).
    func checkLargeMeanVariance(inputShape: [Int], batch: Int) throws {
        let bn = try BatchNorm(name: "bn", inputShape: inputShape)
        let model = makeModel([bn], inputShape: inputShape, randomize: false)  // γ = 1, β = 0
        let c = inputShape[0], s = inputShape.dropFirst().reduce(1, *)
        let x = randomTensor([batch] + inputShape, seed: 50)
        for i in 0..<x.count { x[i] += 10_000 }
        let y = try model.forward(x, context: trainingContext(batch: batch)).array
        let stats = channelStatistics(x, channels: c)
        var expected = [Float]()
        for i in 0..<batch {
            for ch in 0..<c {
                for j in 0..<s {
                    let v = Double(x[(i * c + ch) * s + j])
                    expected.append(Float((v - stats.mean[ch]) / (stats.biased[ch] + Double(bn.epsilon)).squareRoot()))
                }
            }
        }
        assertClose(y, expected, tolerance: 1e-2, relative: false, "normalised output")
        let expectedInvStd = stats.biased.map { Float(1 / ($0 + Double(bn.epsilon)).squareRoot()) }
        assertClose(bn.invStd, expectedInvStd, tolerance: 1e-3, floor: 0, "1/sqrt(var + eps)")
        let expectedRunningVar = stats.unbiased.map { Float(0.9 + 0.1 * $0) }
        assertClose(Array(bn.runningVar.values), expectedRunningVar, tolerance: 1e-3, floor: 0, "running variance")
        let expectedRunningMean = stats.mean.map { Float(0.1 * $0) }
        assertClose(Array(bn.runningMean.values), expectedRunningMean, tolerance: 1e-6, floor: 0, "running mean")
    }

    func testVarianceWithLargeMean2D() throws {
        try checkLargeMeanVariance(inputShape: [2], batch: 64)
    }

    func testVarianceWithLargeMean4D() throws {
        try checkLargeMeanVariance(inputShape: [2, 4, 4], batch: 3)
    }

    func testTrainingNeedsMoreThanOneValuePerChannel() throws {
        let bn = try BatchNorm(name: "bn7", inputShape: [3])
        let model = makeModel([bn], inputShape: [3], randomize: false)
        XCTAssertThrowsError(try model.forward(randomTensor([1, 3], seed: 1), context: trainingContext(batch: 1))) { error in
            XCTAssertTrue(error is ShapeError, "\(error)")
            XCTAssertTrue("\(error)".contains("bn7"), "\(error)")
        }
    }
}

// MARK: - Forward references

final class ForwardReferenceTests: XCTestCase {
    func testDenseForwardMatchesNaiveMatmul() throws {
        let dense = try Dense(name: "fc", inputShape: [5], outFeatures: 4)
        let model = makeModel([dense], inputShape: [5])
        let x = randomTensor([3, 5], seed: 60)
        let y = try model.forward(x, context: ForwardContext(mode: .evaluation)).array
        XCTAssertEqual(dense.weight.shape, [4, 5])
        let w = Array(dense.weight.values), b = Array(dense.bias!.values)
        var expected = [Float]()
        for i in 0..<3 {
            for o in 0..<4 {
                var acc = Double(b[o])
                for k in 0..<5 { acc += Double(x[i * 5 + k]) * Double(w[o * 5 + k]) }
                expected.append(Float(acc))
            }
        }
        assertClose(y, expected, tolerance: 1e-5)
    }

    /// Direct convolution (cross-correlation, as in PyTorch) in Double.
    func naiveConvolution(x: Tensor, weight: [Float], bias: [Float]?, outChannels co: Int, kernel k: Int,
                          stride: Int, padding: Int) -> (values: [Float], height: Int, width: Int) {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], w = x.shape[3]
        let ho = (h + 2 * padding - k) / stride + 1, wo = (w + 2 * padding - k) / stride + 1
        var out = [Float](repeating: 0, count: n * co * ho * wo)
        for s in 0..<n {
            for o in 0..<co {
                for oy in 0..<ho {
                    for ox in 0..<wo {
                        var acc = bias.map { Double($0[o]) } ?? 0
                        for ci in 0..<c {
                            for ky in 0..<k {
                                for kx in 0..<k {
                                    let iy = oy * stride - padding + ky, ix = ox * stride - padding + kx
                                    if iy < 0 || iy >= h || ix < 0 || ix >= w { continue }
                                    acc += Double(weight[((o * c + ci) * k + ky) * k + kx]) * Double(x[((s * c + ci) * h + iy) * w + ix])
                                }
                            }
                        }
                        out[((s * co + o) * ho + oy) * wo + ox] = Float(acc)
                    }
                }
            }
        }
        return (out, ho, wo)
    }

    func checkConvolution(stride: Int, padding: Int, bias: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        // Non-square input (5×6) so that swapped height and width cannot pass.
        let conv = try Conv2D(name: "conv", inputShape: [3, 5, 6], outChannels: 4, kernel: 3, stride: stride,
                              padding: padding, bias: bias)
        let model = makeModel([conv], inputShape: [3, 5, 6])
        let x = randomTensor([2, 3, 5, 6], seed: 61)
        let y = try model.forward(x, context: ForwardContext(mode: .evaluation))
        let reference = naiveConvolution(x: x, weight: Array(conv.weight.values), bias: conv.bias.map { Array($0.values) },
                                         outChannels: 4, kernel: 3, stride: stride, padding: padding)
        XCTAssertEqual(y.shape, [2, 4, reference.height, reference.width], file: file, line: line)
        XCTAssertEqual(conv.outputShape, [4, reference.height, reference.width], file: file, line: line)
        assertClose(y.array, reference.values, tolerance: 1e-5, "stride \(stride) padding \(padding)", file: file, line: line)
    }

    func testConvolutionStride1Padding1() throws { try checkConvolution(stride: 1, padding: 1, bias: true) }
    func testConvolutionStride2Padding1() throws { try checkConvolution(stride: 2, padding: 1, bias: true) }
    func testConvolutionStride2Padding0() throws { try checkConvolution(stride: 2, padding: 0, bias: false) }
    func testConvolutionStride1Padding2() throws { try checkConvolution(stride: 1, padding: 2, bias: true) }

    func testPoolingForward() throws {
        let x = Tensor(shape: [1, 1, 4, 4], values: [
            1, 5, 2, 0,
            3, 4, 8, 1,
            0, -1, 6, 7,
            2, 9, -3, 5,
        ])
        let maxLayer = try MaxPool2D(name: "max", inputShape: [1, 4, 4], size: 2)
        let avgLayer = try AvgPool2D(name: "avg", inputShape: [1, 4, 4], size: 2)
        let gapLayer = try GlobalAvgPool(name: "gap", inputShape: [1, 4, 4])
        let maxPool = makeModel([maxLayer], inputShape: [1, 4, 4])
        let avgPool = makeModel([avgLayer], inputShape: [1, 4, 4])
        let gap = makeModel([gapLayer], inputShape: [1, 4, 4])
        let evaluation = ForwardContext(mode: .evaluation)
        XCTAssertEqual(try maxPool.forward(x, context: evaluation).array, [5, 8, 9, 7])
        XCTAssertEqual(try avgPool.forward(x, context: evaluation).array, [3.25, 2.75, 2.5, 3.75])
        XCTAssertEqual(try gap.forward(x, context: evaluation).array, [49.0 / 16])
    }
}

// MARK: - Dropout

final class DropoutTests: XCTestCase {
    func testEvaluationIsIdentity() throws {
        let dropout = try Dropout(name: "drop", inputShape: [10], probability: 0.5, layerIndex: 0)
        let model = makeModel([dropout], inputShape: [10])
        let x = randomTensor([3, 10], seed: 70)
        let y = try model.forward(x, context: ForwardContext(mode: .evaluation, seed: 1, epoch: 0, sampleIndices: [0, 1, 2]))
        XCTAssertEqual(y.array, x.array)
    }

    func checkKeepFractionAndScale(probability p: Float) throws {
        let dropout = try Dropout(name: "drop", inputShape: [1000], probability: p, layerIndex: 3)
        let model = makeModel([dropout], inputShape: [1000])
        let x = randomTensorAwayFromZero([4, 1000], seed: 71, margin: 0.5)   // zero output ⇔ dropped
        let y = try model.forward(x, context: trainingContext(batch: 4)).array
        let scale = 1 / (1 - p)
        var kept = 0
        for i in 0..<y.count where y[i] != 0 {
            kept += 1
            XCTAssertEqual(y[i], x[i] * scale, accuracy: 1e-6 * abs(x[i] * scale), "element \(i) kept but not scaled by 1/(1−p)")
        }
        // 4000 Bernoulli(1−p) draws: standard deviation of the fraction ≤ 0.008, so ±0.04 is 5σ.
        let fraction = Double(kept) / Double(y.count)
        XCTAssertEqual(fraction, Double(1 - p), accuracy: 0.04, "fraction kept with p = \(p)")
    }

    func testTrainingKeepsAboutOneMinusPAndScales() throws {
        try checkKeepFractionAndScale(probability: 0.5)
        try checkKeepFractionAndScale(probability: 0.3)
    }

    func testMaskDependsOnGlobalSampleIndexNotBatchPosition() throws {
        let dropout = try Dropout(name: "drop", inputShape: [64], probability: 0.5, layerIndex: 2)
        let model = makeModel([dropout], inputShape: [64])
        let ones = Tensor(shape: [3, 64], values: [Float](repeating: 1, count: 3 * 64))
        func masks(_ indices: [Int], epoch: Int = 4) throws -> [[Float]] {
            let context = ForwardContext(mode: .training, seed: 9, epoch: epoch, sampleIndices: indices)
            let y = try model.forward(ones, context: context).array
            return (0..<indices.count).map { Array(y[($0 * 64)..<(($0 + 1) * 64)]) }
        }
        let first = try masks([10, 11, 12])
        let permuted = try masks([12, 10, 11])
        XCTAssertEqual(permuted[0], first[2], "sample 12 at position 0 vs position 2")
        XCTAssertEqual(permuted[1], first[0], "sample 10 at position 1 vs position 0")
        XCTAssertEqual(permuted[2], first[1], "sample 11 at position 2 vs position 1")
        XCTAssertNotEqual(first[0], first[1], "different samples must get different masks")
        let otherEpoch = try masks([10, 11, 12], epoch: 5)
        XCTAssertNotEqual(otherEpoch[0], first[0], "the mask must change with the epoch")
    }

    func testDifferentLayersGetDifferentMasks() throws {
        let a = try Dropout(name: "a", inputShape: [64], probability: 0.5, layerIndex: 1)
        let b = try Dropout(name: "b", inputShape: [64], probability: 0.5, layerIndex: 5)
        let ma = makeModel([a], inputShape: [64]), mb = makeModel([b], inputShape: [64])
        let ones = Tensor(shape: [1, 64], values: [Float](repeating: 1, count: 64))
        let context = ForwardContext(mode: .training, seed: 9, epoch: 0, sampleIndices: [3])
        let ya = try ma.forward(ones, context: context).array
        let yb = try mb.forward(ones, context: context).array
        XCTAssertNotEqual(ya, yb)
    }
}
