"""Offset pagination shared by every list endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

MAX_PAGE_SIZE = 200


class PageParams(BaseModel):
    limit: int
    offset: int


async def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")] = 50,
    offset: Annotated[int, Query(ge=0, description="Items to skip.")] = 0,
) -> PageParams:
    """Async on purpose: FastAPI runs a plain ``def`` dependency in its threadpool."""
    return PageParams(limit=limit, offset=offset)


PageDep = Annotated[PageParams, Depends(page_params)]


ItemT = TypeVar("ItemT")


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    total: int
    limit: int
    offset: int


SchemaT = TypeVar("SchemaT", bound=BaseModel)


def page_of(items: list[ItemT], page: PageParams) -> Page[ItemT]:
    """One page of a list already in memory (what comes from outside the database)."""
    return Page[ItemT](
        items=items[page.offset : page.offset + page.limit],
        total=len(items),
        limit=page.limit,
        offset=page.offset,
    )


async def paginate(
    session: AsyncSession, query: Select[Any], page: PageParams, schema: type[SchemaT]
) -> Page[SchemaT]:
    """One page of ``query``'s rows rendered as ``schema``, with the total count."""
    return await paginate_as(session, query, page, schema.model_validate)


async def paginate_as(
    session: AsyncSession, query: Select[Any], page: PageParams, render: Callable[[Any], ItemT]
) -> Page[ItemT]:
    """One page of ``query``'s rows, each rendered by ``render``, with the total count."""
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = (await session.scalars(query.limit(page.limit).offset(page.offset))).all()
    return Page[ItemT](
        items=[render(row) for row in rows],
        total=int(total or 0),
        limit=page.limit,
        offset=page.offset,
    )
