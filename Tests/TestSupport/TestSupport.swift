// Shared test helpers: closeness assertions, deterministic random tensors, and a numerical
// gradient checker for models (central differences against the analytic backward pass).
import Collectives
import Foundation
import NN
import TensorCore
import XCTest

// MARK: - Closeness

/// Asserts that `a` and `b` have the same length and agree element by element.
///
/// With `relative` (the default) element i passes when |a[i] − b[i]| ≤ tolerance · max(|a[i]|, |b[i]|, floor):
/// relative for values larger than `floor`, absolute (tolerance · floor) for smaller ones, so that
/// values that happen to be near zero do not demand impossible relative accuracy. Without
/// `relative` the test is |a[i] − b[i]| ≤ tolerance. A NaN or infinity never passes unless both sides
/// hold the same infinity. On failure the message names the worst element.
@discardableResult
public func assertClose(_ a: [Float], _ b: [Float], tolerance: Float, relative: Bool = true, floor: Float = 1,
                        _ message: String = "", file: StaticString = #filePath, line: UInt = #line) -> Bool {
    let prefix = message.isEmpty ? "" : "\(message): "
    guard a.count == b.count else {
        XCTFail("\(prefix)lengths differ: \(a.count) vs \(b.count)", file: file, line: line)
        return false
    }
    var worst = -1
    var worstRatio: Float = 0
    var failures = 0
    for i in 0..<a.count {
        let x = a[i], y = b[i]
        let ratio: Float
        if x == y {
            ratio = 0
        } else if !x.isFinite || !y.isFinite {
            ratio = .infinity
        } else {
            let allowed = relative ? tolerance * max(abs(x), abs(y), floor) : tolerance
            ratio = allowed > 0 ? abs(x - y) / allowed : .infinity
        }
        if ratio > 1 { failures += 1 }
        if ratio > worstRatio { worstRatio = ratio; worst = i }
    }
    if failures > 0 {
        let i = worst
        XCTFail("\(prefix)\(failures) of \(a.count) elements differ; worst at index \(i): \(a[i]) vs \(b[i]) "
                + "(difference \(abs(a[i] - b[i])), \(relative ? "relative" : "absolute") tolerance \(tolerance))",
                file: file, line: line)
        return false
    }
    return true
}

/// The largest absolute value of `values` (0 when empty).
public func maxAbs(_ values: [Float]) -> Float { values.reduce(0) { max($0, abs($1)) } }

/// The largest absolute element-wise difference.
public func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var m: Float = 0
    for i in 0..<a.count { m = max(m, abs(a[i] - b[i])) }
    return m
}

// MARK: - Fixtures

/// A tensor of standard normal deviates (times `scale`) from `Philox(seed:).stream(.test, 0, 0)`.
public func randomTensor(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
    let t = Tensor(zeros: shape)
    let stream = Philox(seed: seed).stream(.test, 0, 0)
    for i in 0..<t.count { t[i] = scale * stream.normal(i) }
    return t
}

/// Random values whose magnitude is at least `margin`: sign(z) · (margin + |z|) for normal z. Used
/// for inputs of ReLU-family layers so that a finite-difference step never crosses the kink at 0.
public func randomTensorAwayFromZero(_ shape: [Int], seed: UInt64, margin: Float = 0.2) -> Tensor {
    let t = randomTensor(shape, seed: seed)
    for i in 0..<t.count {
        let z = t[i]
        t[i] = (z < 0 ? -1 : 1) * (margin + abs(z))
    }
    return t
}

/// Rows `range` of a tensor whose first dimension is the batch, as a new tensor.
public func rows(_ t: Tensor, _ range: Range<Int>) -> Tensor {
    let inner = t.shape.dropFirst().reduce(1, *)
    let shape = [range.count] + Array(t.shape.dropFirst())
    let out = Tensor(zeros: shape)   // (also for an empty range, without touching an empty array's storage)
    for i in 0..<(range.count * inner) { out[i] = t[range.lowerBound * inner + i] }
    return out
}

/// Overwrites a parameter's values with `offset + scale · normal` deviates keyed by `seed`.
public func fillRandom(_ parameter: Parameter, seed: UInt64, scale: Float = 0.5, offset: Float = 0) {
    let stream = Philox(seed: seed).stream(.test, 1, 0)
    for i in 0..<parameter.count { parameter.value[i] = offset + scale * stream.normal(i) }
}

/// Overwrites a parameter's values with `values`.
public func setValues(_ parameter: Parameter, _ values: [Float]) {
    precondition(values.count == parameter.count, "\(values.count) values for \(parameter.name)\(parameter.shape)")
    for i in 0..<values.count { parameter.value[i] = values[i] }
}

/// Every trainable parameter of `model` filled with random values (different per parameter), so that
/// gradient checks are not blind to terms that vanish at the default initialisation (β = 0, γ = 1).
public func randomizeParameters(_ model: Model, seed: UInt64, scale: Float = 0.5) {
    for (k, p) in model.parameters.entries.enumerated() {
        fillRandom(p, seed: seed &+ UInt64(k) &* 7919, scale: scale)
    }
}

/// Back-propagates `dOut` through every layer of `model`, asking each for its input gradient (the
/// model's own `backward` does not return one and skips it for the first layer). Parameter
/// gradients are added to the model's gradient arena.
public func backwardWithInputGradient(_ model: Model, _ dOut: Tensor) throws -> Tensor {
    var g = dOut
    for layer in model.layers.reversed() {
        guard let next = try layer.backward(g, needInputGradient: true) else {
            throw ShapeError("\(layer.name): backward returned no input gradient although one was requested")
        }
        g = next
    }
    return g
}

// MARK: - Numerical gradients

/// Checks `model`'s analytic gradients against central finite differences.
///
/// The scalar is L(x, θ) = Σᵢ Rᵢ · yᵢ with y = model.forward(x) and R a fixed random "upstream"
/// tensor, so dL/dy = R. The analytic dL/dx comes from back-propagating R through every layer and
/// dL/dθ from the gradient arena (both after `zeroGrads`); `Model.backward(R)` must give the same
/// parameter gradients. Numerically, each input element and each parameter element is moved by ±h
/// and dL ≈ (L(+h) − L(−h)) / (actual difference of the two perturbed floats), with L accumulated in
/// Double from the float32 outputs.
///
/// Tolerance. The forward pass is float32, so each evaluation of L carries a rounding error of
/// about a few ε·Σ|Rᵢyᵢ| (ε = 2⁻²³ ≈ 1.2e-7, a few for the short dot products of these tiny
/// layers); dividing by 2h turns that into an absolute error of ≈ 4ε·Σ|Rᵢyᵢ| / h in the difference
/// quotient (≈ 1e-3 for Σ|Rᵢyᵢ| ≈ 30 and h = 1e-2), which is added to the allowance. The truncation
/// error of a central difference is h²·|f‴|/6 ≈ 2e-5 for the smooth layers here (O(1) inputs and
/// curvatures), and zero for piecewise-linear layers whose kinks are kept further than h away.
/// Element i then passes when |analytic − numeric| ≤ tolerance · max(|analytic|, |numeric|,
/// 0.1·scale) + noise, where scale is the largest gradient magnitude of that tensor: a relative test
/// for large elements and one relative to the tensor's scale for elements near zero. The default
/// tolerance of 2e-2 is an order of magnitude above both error sources, while a real bug (a missing
/// term, a wrong index, a factor of 2) produces differences of the order of the gradient itself.
public func checkGradients(model: Model, input: Tensor, context: ForwardContext,
                           tolerance: Float = 2e-2, step h: Float = 1e-2, upstreamSeed: UInt64 = 0xC0FFEE,
                           checkInput: Bool = true, checkParameters: Bool = true,
                           file: StaticString = #filePath, line: UInt = #line) {
    do {
        let y0 = try model.forward(input, context: context)
        let upstream = randomTensor(y0.shape, seed: upstreamSeed)
        var lossScale = 0.0
        for i in 0..<y0.count { lossScale += abs(Double(upstream[i]) * Double(y0[i])) }
        let noise = Float(4 * Double(Float.ulpOfOne) * lossScale / Double(h))

        // Analytic gradients.
        model.zeroGrads()
        let analyticInput = try backwardWithInputGradient(model, upstream).array
        let analyticParameters = Array(model.parameters.flatGrads)

        // Model.backward must accumulate the same parameter gradients.
        model.zeroGrads()
        _ = try model.forward(input, context: context)
        try model.backward(upstream)
        assertClose(Array(model.parameters.flatGrads), analyticParameters, tolerance: 1e-6,
                    "parameter gradients from Model.backward vs layer-by-layer backward", file: file, line: line)

        func loss() throws -> Double {
            let y = try model.forward(input, context: context)
            var s = 0.0
            for i in 0..<y.count { s += Double(upstream[i]) * Double(y[i]) }
            return s
        }
        func difference(_ p: UnsafeMutablePointer<Float>, _ i: Int) throws -> Float {
            let saved = p[i]
            let plus = saved + h, minus = saved - h
            p[i] = plus
            let lp = try loss()
            p[i] = minus
            let lm = try loss()
            p[i] = saved
            return Float((lp - lm) / (Double(plus) - Double(minus)))
        }

        if checkInput {
            var numeric = [Float](repeating: 0, count: input.count)
            for i in 0..<input.count { numeric[i] = try difference(input.data, i) }
            compareGradients(analytic: analyticInput, numeric: numeric, what: "dL/dinput", tolerance: tolerance,
                             noise: noise, file: file, line: line)
        }
        if checkParameters {
            for p in model.parameters.entries {
                var numeric = [Float](repeating: 0, count: p.count)
                for i in 0..<p.count { numeric[i] = try difference(p.value, i) }
                let analytic = Array(analyticParameters[p.offset..<(p.offset + p.count)])
                compareGradients(analytic: analytic, numeric: numeric, what: "dL/d\(p.name)", tolerance: tolerance,
                                 noise: noise, file: file, line: line)
            }
        }
        // Leave the model in the analytic state of the unperturbed input (callers may inspect it).
        _ = try model.forward(input, context: context)
    } catch {
        XCTFail("gradient check threw: \(error)", file: file, line: line)
    }
}

/// The comparison used by `checkGradients` (see there for the tolerance rule). Fails as well when the
/// numerical gradient is indistinguishable from rounding noise, because then the check proves nothing.
public func compareGradients(analytic: [Float], numeric: [Float], what: String, tolerance: Float, noise: Float,
                             file: StaticString = #filePath, line: UInt = #line) {
    guard analytic.count == numeric.count else {
        XCTFail("\(what): \(analytic.count) analytic vs \(numeric.count) numeric values", file: file, line: line)
        return
    }
    let scale = max(maxAbs(analytic), maxAbs(numeric))
    if scale <= 10 * noise {
        XCTFail("\(what): gradient scale \(scale) is within rounding noise \(noise); the check would be vacuous",
                file: file, line: line)
        return
    }
    var worst = 0
    var worstRatio: Float = -1
    var failures = 0
    for i in 0..<analytic.count {
        let a = analytic[i], n = numeric[i]
        let allowed = tolerance * max(abs(a), abs(n), 0.1 * scale) + noise
        let ratio = (a.isFinite && n.isFinite) ? abs(a - n) / allowed : .infinity
        if ratio > 1 { failures += 1 }
        if ratio > worstRatio { worstRatio = ratio; worst = i }
    }
    if failures > 0 {
        XCTFail("\(what): \(failures) of \(analytic.count) elements disagree; worst at index \(worst): analytic "
                + "\(analytic[worst]) vs numeric \(numeric[worst]) (scale \(scale), noise \(noise), tolerance \(tolerance))",
                file: file, line: line)
    }
}

/// True when `text` contains every one of `parts` (for checking error messages).
public func containsAll(_ text: String, _ parts: [String]) -> Bool { parts.allSatisfy { text.contains($0) } }

/// Asserts that `body` throws an `E` whose `message` contains every string of `parts`.
public func assertThrows<E: Error, T>(_ body: @autoclosure () throws -> T, _ type: E.Type, message: (E) -> String,
                                      mentions parts: [String], file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
        guard let typed = error as? E else {
            XCTFail("expected \(E.self), got \(Swift.type(of: error)): \(error)", file: file, line: line)
            return
        }
        let text = message(typed)
        for part in parts {
            XCTAssertTrue(text.contains(part), "'\(text)' should mention '\(part)'", file: file, line: line)
        }
    }
}
