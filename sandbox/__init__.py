"""Development stand-ins, not runtime code: the DashScope and Discord emulators, the offline demo, test videos.

Needs the `sandbox` extra (`pip install 'kf2v-bot[sandbox]'`, PyAV); the bot never imports it.
"""
