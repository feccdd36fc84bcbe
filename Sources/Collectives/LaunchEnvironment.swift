// How a process tells that a launcher (mpirun, mpiexec, srun) started it.
import Foundation

public enum LaunchEnvironment {
    /// Variables that OpenMPI's mpirun (OMPI_*), PMIx and Slurm's srun (PMI_*) set in every rank.
    public static let variables = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK"]

    /// True when this process was started by mpirun/mpiexec or srun.
    public static var startedByLauncher: Bool {
        let env = ProcessInfo.processInfo.environment
        return variables.contains { env[$0] != nil }
    }
}
