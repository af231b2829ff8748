"""The contract ``distdb.body_limit`` relies on in Daphne and Twisted: an upgrade that
changes it must fail here, not let huge bodies through in production."""

from __future__ import annotations

import inspect

from daphne import http_protocol
from twisted.web import http

from distdb import body_limit


def test_daphnes_factory_looks_its_request_class_up_by_module_name():
    source = inspect.getsource(http_protocol.HTTPFactory.buildProtocol)
    assert "protocol.requestFactory = WebRequest" in source


def test_twisted_calls_the_hooks_the_bounded_request_overrides():
    assert "gotLength" in inspect.getsource(http.HTTPChannel)
    for name in ("gotLength", "handleContentChunk", "requestReceived"):
        assert callable(getattr(http.Request, name))
    assert "req.requestReceived(command, path, version)" in inspect.getsource(
        http.HTTPChannel.allContentReceived
    )


def test_install_makes_the_factory_build_bounded_requests(monkeypatch):
    monkeypatch.setattr(http_protocol, "WebRequest", http_protocol.WebRequest)
    body_limit.install(1000)
    bounded = http_protocol.WebRequest
    assert issubclass(bounded, body_limit._DAPHNE_REQUEST)
    assert bounded.max_body == 1000 + body_limit.SLACK_BYTES
