"""Example web applications on usercredits: FastAPI (:mod:`examples.fastapi_app`) and Flask
(:mod:`examples.flask_app`), run from the repository's root."""
