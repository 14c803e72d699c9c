//! `Overrides<T>`: the flags and `SCONCE_*` variables given for a settings struct, laid over
//! a value of it (read from the file, or a command's defaults).
//!
//! `T` is the settings struct itself (clap `Args` and serde at once), so each setting has one
//! definition and one default. Its flags are registered as optional (`augment_args_for_update`)
//! and applied with clap's `update_from_arg_matches`, which sets exactly the fields whose flag
//! or variable was given (a flag beats its variable).

use std::fmt;
use std::marker::PhantomData;

use clap::{ArgMatches, Args, Command, FromArgMatches, Id};

/// What the command line and environment said about `T`; flatten it into a command.
pub struct Overrides<T> {
    matches: ArgMatches,
    settings: PhantomData<fn() -> T>,
}

impl<T: FromArgMatches> Overrides<T> {
    /// Sets each field of `settings` whose flag or variable was given.
    pub fn apply(&self, settings: &mut T) -> Result<(), clap::Error> {
        settings.update_from_arg_matches(&self.matches)
    }

    /// `base` with the given flags and variables applied.
    pub fn over(&self, mut base: T) -> Result<T, clap::Error> {
        self.apply(&mut base)?;
        Ok(base)
    }
}

impl<T: Args> Args for Overrides<T> {
    fn group_id() -> Option<Id> {
        T::group_id()
    }

    fn augment_args(command: Command) -> Command {
        T::augment_args_for_update(command)
    }

    fn augment_args_for_update(command: Command) -> Command {
        T::augment_args_for_update(command)
    }
}

impl<T> FromArgMatches for Overrides<T> {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self { matches: matches.clone(), settings: PhantomData })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.matches = matches.clone();
        Ok(())
    }
}

impl<T> Clone for Overrides<T> {
    fn clone(&self) -> Self {
        Self { matches: self.matches.clone(), settings: PhantomData }
    }
}

impl<T> fmt::Debug for Overrides<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overrides").field("matches", &self.matches).finish()
    }
}
