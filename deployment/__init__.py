"""One deployment's configuration: a YAML file parsed into pydantic models, one section per process.

`deployment.config.load_config` reads the file and the ``VLALOOP_<SECTION>__<FIELD>`` environment
overrides into a `DeploymentConfig`; its sections are `deployment.model.ModelConfig`,
`deployment.server.ServerConfig`, `deployment.learner.LearnerConfig` and `deployment.robot.RobotConfig`.
Every process reads the same file, so the sections live here rather than in the processes: the
server can read its section without importing the learner, and the other way round.
"""
