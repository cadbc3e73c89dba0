"""kf2v-bot: Discord front end and traffic controller for DashScope keyframe-to-video models."""

__version__ = "0.1.0"
