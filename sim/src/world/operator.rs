//! The operator: commands at random moments of the fault phase (restart, restart-now, reload, scaling,
//! upgrade, stop, stop-now, a second stop while one drains), drawn from the operator's own
//! random stream and handed to the machine as the input of a wake-up (a signal or a
//! control request, `World::turn`). It owns nothing but that stream's use; it must not
//! reach into the model OS or change the world: the machine's answer is all a command does.

use core::time::Duration;

use drover_machine::{Command, Phase};

use super::World;
use crate::coverage::Mark;
use crate::rng::Rng;
use crate::swarm;

/// Time until the operator's next command, at `per_minute` commands a minute.
pub(super) fn gap(rng: &mut Rng, per_minute: f64) -> Duration {
    rng.exp(Duration::from_secs_f64(60.0 / per_minute.max(1e-9)))
}

impl World {
    pub(super) fn operator_command(&mut self) -> Command {
        let sup = self.driver.supervisor();
        let rng = &mut self.rng_op;
        let rolling = {
            let generation = sup.generation();
            sup.workers().any(|w| w.generation < generation)
        };
        // An accepted upgrade or stop ends the run early (this supervisor exits), so they
        // are rarer than the commands that keep it running.
        let draining = matches!(sup.phase(), Phase::Stopping { immediate: false });
        let second_stop = draining && rng.chance(0.5);
        let command = match rng.below(100) {
            // An impatient operator sends a second TERM (serverengine, uninterruptible).
            _ if second_stop => Command::Stop,
            0..=17 => Command::Restart,
            18..=21 => Command::RestartNow,
            22..=49 => {
                let next = swarm::draw_reload(rng, sup.config());
                Command::Reload(Box::new(next))
            }
            50..=61 => Command::ScaleUp,
            62..=73 => Command::ScaleDown,
            74..=85 => Command::ScaleTo(rng.between(0, 20) as u32),
            86..=95 => Command::Upgrade,
            96..=98 => Command::Stop,
            _ => Command::StopNow,
        };
        let coverage = &mut self.driver.os_mut().coverage;
        if rolling
            && matches!(
                command,
                Command::Restart | Command::RestartNow | Command::Reload(_)
            )
        {
            coverage.hit(Mark::ReloadDuringReload);
        }
        if draining && matches!(command, Command::Stop | Command::StopNow) {
            coverage.hit(Mark::SecondStop);
        }
        command
    }
}
