from fastapi import APIRouter

from robaudit.backend.app.api.routes import checkpoints, datasets, evaluations, health, jobs, reports, shared, trainings

api_router = APIRouter()
api_router.include_router(checkpoints.router)
api_router.include_router(datasets.router)
api_router.include_router(trainings.router)
api_router.include_router(evaluations.router)
api_router.include_router(jobs.router)
api_router.include_router(reports.router)
api_router.include_router(shared.router)
api_router.include_router(health.router)
