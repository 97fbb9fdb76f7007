"""A person in the loop: label your own images in the browser (`experiments/label.py`).

`session` steps the library's round loop one round at a time with a person's answers,
`store` keeps them in SQLite, `server` serves the page in `static/` (Flask, waitress),
`pool` opens the --images folder as the pool (hidden labels, feature vectors), `images`
decodes (and caches) its images.
`headless` reopens a workdir (predictions) or simulates a person without a page.
"""
