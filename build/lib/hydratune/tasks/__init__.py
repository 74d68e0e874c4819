"""Training objectives. Every task has one shape (`hydratune.tasks.task.Task`); `registry.TASKS` names the
built-in ones, and a user's own task is a `_target_` in `conf/task/<name>.yaml`."""
