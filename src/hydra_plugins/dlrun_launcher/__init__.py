"""dlrun's Hydra launcher (`hydra/launcher=parallel`): one process per sweep job. Hydra finds
launchers only under the `hydra_plugins` namespace package, so it lives here, not in dlrun."""
