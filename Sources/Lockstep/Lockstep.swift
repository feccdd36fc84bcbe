// The Lockstep library: `import Lockstep` gives a Swift program what the command line uses.
//
//   - models in code: `[LayerSpec]` (`.dense(out: 64, bias: true, initializer: nil)`, `.relu`, ...), the
//     same layers as a YAML config's `model:` list, in `TrainingConfig.model`;
//   - data: the `Dataset` protocol and `TrainingData(train:test:)`, or `TrainingData.load(config)`
//     for the formats configs name;
//   - training: `Trainer(config:communicator:data:)`, `run(resume:)` or `run()`, with `onStep`
//     and `onEpoch` callbacks; evaluation (`evaluate()`), checkpoints (`checkpointBytes`,
//     `writeAtomically`, `restore(from:)`) and ONNX export (`ONNXExporter.export`);
//   - ranks: `Launcher.run(simulateRanks:) { communicator in ... }` runs the body once per rank:
//     under `mpirun`/`srun` through MPI, with simulated ranks as threads, or as one process, and
//     ends every rank with a `rank R: message` line when one fails.
// See examples/spirals for a whole program.
@_exported import Collectives
@_exported import Configuration
@_exported import Datasets
@_exported import Deploy
@_exported import Formats
@_exported import Launch
@_exported import NN
@_exported import Optimizers
@_exported import TensorCore
@_exported import Training
