"""`kf2v-bot demo`: the whole pipeline offline, with no credentials, in well under two minutes.

The Discord emulator and the DashScope emulator listen on 127.0.0.1 (ephemeral ports); the real bot
(`build_services` + `VideoBot`, real discord.py) runs between them with a throw-away data directory inside
the output folder. A scripted afternoon (`script.py`) plays against it through Discord only: three guilds,
a burst of ten `/kf2v` requests with drawn frames (`scenes.py`) and a four-keyframe `/kf2v-story`, a content
rejection, a budget refusal, a cancel, a regenerate and a Remix. A live view (`live.py`) follows the queue,
the two provider slots and each job; `report.py` writes report.md / report.json, copies the posted mp4s to
OUTPUT/videos/ and runs the checks that decide the exit code. Nothing here is imported by the bot at run time.
"""

from sandbox.demo.runner import DEFAULT_TIME_SCALE, run_demo

__all__ = ["DEFAULT_TIME_SCALE", "run_demo"]
