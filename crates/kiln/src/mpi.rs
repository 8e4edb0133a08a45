//! Training across processes and machines over MPI (cargo feature `mpi`): hold the
//! value [`init`] returns for the life of `main`, start the program under
//! `mpirun -np N`, and `fit`, `evaluate`, `predict`, `train_on_batch` and
//! `test_on_batch` run data-parallel — see [`crate::distributed`] for what each rank
//! does.
//!
//! ```no_run
//! # fn main() -> kiln::Result<()> {
//! let mpi = kiln::mpi::init()?;
//! if mpi.is_chief() {
//!     println!("training on {} ranks", mpi.size());
//! }
//! // compile, fit, evaluate as always
//! # Ok(())
//! # }
//! ```
//!
//! Run without `mpirun`, the program is a world of one rank and trains alone.

use crate::Result;
use kiln_train::TrainError;
use kiln_train::distributed::{Collective, WorldGuard, set_world};
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use std::sync::{Arc, Mutex};

/// The world communicator. MPI is initialised for serialized calls from any thread;
/// the mutex serializes them.
struct World {
    comm: Mutex<SimpleCommunicator>,
    rank: usize,
    size: usize,
}

// SAFETY: the communicator is a handle MPI lets any thread use under
// `Threading::Serialized` (which `init` requires), and every use goes through the mutex.
unsafe impl Send for World {}
// SAFETY: as above: shared use is serialized by the mutex.
unsafe impl Sync for World {}

impl World {
    fn comm(&self) -> std::sync::MutexGuard<'_, SimpleCommunicator> {
        self.comm.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// MPI's default error handler aborts every rank on a failed call, so the calls below
// have no error to return: a transport failure ends the job instead of hanging it.
impl Collective for World {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn broadcast(&self, buf: &mut [u8]) -> kiln_train::Result<()> {
        self.comm().process_at_rank(0).broadcast_into(buf);
        Ok(())
    }
    fn all_gather(
        &self,
        send: &[u8],
        recv: &mut [u8],
        counts: &[i32],
        displs: &[i32],
    ) -> kiln_train::Result<()> {
        let mut parts = PartitionMut::new(recv, counts, displs);
        self.comm().all_gather_varcount_into(send, &mut parts);
        Ok(())
    }
    fn all_to_all(&self, send: &[u8], recv: &mut [u8]) -> kiln_train::Result<()> {
        self.comm().all_to_all_into(send, recv);
        Ok(())
    }
    fn max(&self, v: u64) -> kiln_train::Result<u64> {
        let mut out = 0u64;
        self.comm().all_reduce_into(&v, &mut out, mpi::collective::SystemOperation::max());
        Ok(out)
    }
}

/// MPI, initialised, and the world `fit` trains with; dropping it finalises MPI (or, in
/// a panic, aborts every rank, so none is left waiting for this one).
pub struct Mpi {
    world: Arc<World>,
    guard: Option<WorldGuard>,
    universe: Option<Universe>,
}

/// Initialises MPI and makes its world the ranks that `fit` and `evaluate` train with.
/// Call it once, at the top of `main`, and keep the value until the end.
pub fn init() -> Result<Mpi> {
    let refused = |message: String| TrainError::Distributed { message };
    let (universe, threading) = mpi::initialize_with_threading(mpi::Threading::Serialized)
        .ok_or_else(|| {
            refused("MPI is initialised already; call kiln::mpi::init() once per process".into())
        })?;
    if threading < mpi::Threading::Serialized {
        return Err(refused(format!(
            "this MPI offers thread level {threading:?}, but kiln needs Serialized; use an MPI built with thread support (Open MPI and MPICH from Debian are)"
        ))
        .into());
    }
    let comm = universe.world();
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    let world = Arc::new(World { comm: Mutex::new(comm), rank, size });
    let guard = set_world(world.clone());
    Ok(Mpi { world, guard: Some(guard), universe: Some(universe) })
}

impl Mpi {
    /// This process's rank, `0..size()`.
    pub fn rank(&self) -> usize {
        self.world.rank
    }
    /// How many ranks train together.
    pub fn size(&self) -> usize {
        self.world.size
    }
    /// Whether this is rank 0, the one that prints and writes files.
    pub fn is_chief(&self) -> bool {
        self.world.rank == 0
    }
}

impl Drop for Mpi {
    fn drop(&mut self) {
        if std::thread::panicking() && self.world.size > 1 {
            eprintln!("kiln: rank {} panicked; aborting every rank", self.world.rank);
            self.world.comm().abort(101);
        }
        self.guard.take();
        self.universe.take();
    }
}
