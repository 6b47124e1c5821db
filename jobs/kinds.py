"""The kinds of job: what each makes (storefronts, an achievement) and the body of its 200 answer; a failure is raised
as an ApiError."""

from __future__ import annotations

import contextvars
from concurrent.futures import ThreadPoolExecutor
from datetime import date

from flask import Flask
from sqlalchemy import select

from core.db import find_themes, find_user
from core.errors import ProviderError
from jobs.state import Progress, save_once, saved_outputs
from models import Achievement, Job, JobOutput, Storefront
from providers import badge_spec, storefront_spec

MAX_THEME_WORKERS = 4
ACHIEVEMENT_SLOT = "achievement"


def make_storefronts(app: Flask, job: Job, progress: Progress) -> dict:
    """One storefront per theme, themes generated concurrently; progress reported as each theme ends."""
    generator = app.extensions["generator"]
    with app.extensions["sessionmaker"]() as session:
        user = find_user(job.params["user_id"], session=session)  # it may have been deleted since the request
        user_id, user_name, recommendations = user.id, user.name, dict(user.recommendations or {})
    themes = find_themes(recommendations, job.params["shop_theme"])
    done = saved_outputs(app, job.id)
    progress.start(len(themes), [theme for theme in themes if theme in done])
    errors: dict[str, ProviderError] = {}
    cached: dict[str, bool] = {}  # whether each theme's picture came from the image cache (not for earlier runs')

    specs = {theme: storefront_spec(theme, list(recommendations[theme])) for theme in themes}

    fresh = job.params.get("fresh", False)

    def make(theme: str):
        try:
            return generator.generate_image(specs[theme], fresh=fresh)
        except ProviderError as error:
            errors[theme] = error
            return None
        finally:
            progress.advance(theme)

    todo = [theme for theme in themes if theme not in done]
    with ThreadPoolExecutor(max_workers=max(1, min(MAX_THEME_WORKERS, len(todo)))) as pool:
        # Each theme's thread runs in a copy of this context: the job's call context and the app context.
        futures = [pool.submit(contextvars.copy_context().run, make, theme) for theme in todo]
        for theme, future in zip(todo, futures, strict=True):  # saved in the user's order of themes, as ids say
            image = future.result()
            if image is not None:
                cached[theme] = image.cached
                row = Storefront(user_id=user_id, name=f"{user_name}_{theme}", description=specs[theme].prompt,
                                 style=theme)
                save_once(app, job.id, theme, row, image)

    with app.extensions["sessionmaker"]() as session:
        made = session.scalars(select(Storefront).join(JobOutput, JobOutput.storefront_id == Storefront.id)
                               .where(JobOutput.job_id == job.id)).all()
    by_theme = {storefront.style: storefront for storefront in made}
    made = [by_theme[theme] for theme in themes if theme in by_theme]
    failed = [(theme, errors[theme]) for theme in themes if theme in errors]
    if not made:
        raise combined_error([error for _theme, error in failed])
    body = {"user name": user_name, "recommendations": recommendations,
            "storefronts": [{**storefront.to_dict(), "cached": cached.get(storefront.style, False)}
                            for storefront in made]}
    if failed:
        body["errors"] = [{"theme": theme, "error": error.message, "code": error.code} for theme, error in failed]
    return {**body, "job_id": job.id}


def combined_error(errors: list[ProviderError]) -> ProviderError:
    """The answer when every theme failed: their shared error, else a generic provider error."""
    if len({error.code for error in errors}) == 1:
        return errors[-1]
    return ProviderError(errors[-1].provider, "Every theme failed to generate.")


def make_achievement(app: Flask, job: Job, progress: Progress) -> dict:
    """The achievement's text, then its badge image; saved once however often the job runs."""
    cached = False
    if ACHIEVEMENT_SLOT not in saved_outputs(app, job.id):
        generator = app.extensions["generator"]
        draft = generator.write_achievement(date.fromisoformat(job.params["date"]), job.params["product"])
        image = generator.generate_image(badge_spec(draft), fresh=job.params.get("fresh", False))
        cached = image.cached
        row = Achievement(name=draft.name, description=draft.description, occasion=draft.occasion,
                          product_type=draft.product_type)
        save_once(app, job.id, ACHIEVEMENT_SLOT, row, image)
    progress.advance(ACHIEVEMENT_SLOT)
    with app.extensions["sessionmaker"]() as session:
        achievement = session.scalar(select(Achievement).join(JobOutput, JobOutput.achievement_id == Achievement.id)
                                     .where(JobOutput.job_id == job.id))
        return {"achievement_name": achievement.name, **achievement.to_dict(), "cached": cached, "job_id": job.id}


# Each kind makes its rows and returns the body of its 200 answer; a failure is raised as an ApiError.
KINDS = {"storefronts": make_storefronts, "achievement": make_achievement}
