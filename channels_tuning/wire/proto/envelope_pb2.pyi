from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("kind", "seq", "topic", "payload", "type_url", "sent_at_ms", "error_code", "error", "offset", "epoch", "recovered", "detail")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[Envelope.Kind]
        DATA: _ClassVar[Envelope.Kind]
        PING: _ClassVar[Envelope.Kind]
        PONG: _ClassVar[Envelope.Kind]
        ACK: _ClassVar[Envelope.Kind]
        ERROR: _ClassVar[Envelope.Kind]
        SUBSCRIBED: _ClassVar[Envelope.Kind]
        PRESENCE: _ClassVar[Envelope.Kind]
        SUBSCRIBE: _ClassVar[Envelope.Kind]
        UNSUBSCRIBE: _ClassVar[Envelope.Kind]
        UNSUBSCRIBED: _ClassVar[Envelope.Kind]
        REQUEST: _ClassVar[Envelope.Kind]
        REPLY: _ClassVar[Envelope.Kind]
        PUSH: _ClassVar[Envelope.Kind]
    KIND_UNSPECIFIED: Envelope.Kind
    DATA: Envelope.Kind
    PING: Envelope.Kind
    PONG: Envelope.Kind
    ACK: Envelope.Kind
    ERROR: Envelope.Kind
    SUBSCRIBED: Envelope.Kind
    PRESENCE: Envelope.Kind
    SUBSCRIBE: Envelope.Kind
    UNSUBSCRIBE: Envelope.Kind
    UNSUBSCRIBED: Envelope.Kind
    REQUEST: Envelope.Kind
    REPLY: Envelope.Kind
    PUSH: Envelope.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: Envelope.Kind
    seq: int
    topic: str
    payload: bytes
    type_url: str
    sent_at_ms: int
    error_code: int
    error: str
    offset: int
    epoch: str
    recovered: bool
    detail: str
    def __init__(self, kind: _Optional[_Union[Envelope.Kind, str]] = ..., seq: _Optional[int] = ..., topic: _Optional[str] = ..., payload: _Optional[bytes] = ..., type_url: _Optional[str] = ..., sent_at_ms: _Optional[int] = ..., error_code: _Optional[int] = ..., error: _Optional[str] = ..., offset: _Optional[int] = ..., epoch: _Optional[str] = ..., recovered: bool = ..., detail: _Optional[str] = ...) -> None: ...

class LayerFrame(_message.Message):
    __slots__ = ("binary", "text", "is_text", "coalesce_key", "has_coalesce_key", "channels", "channels_is_list", "group", "text_is_json")
    BINARY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IS_TEXT_FIELD_NUMBER: _ClassVar[int]
    COALESCE_KEY_FIELD_NUMBER: _ClassVar[int]
    HAS_COALESCE_KEY_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_IS_LIST_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TEXT_IS_JSON_FIELD_NUMBER: _ClassVar[int]
    binary: bytes
    text: str
    is_text: bool
    coalesce_key: str
    has_coalesce_key: bool
    channels: _containers.RepeatedScalarFieldContainer[str]
    channels_is_list: bool
    group: str
    text_is_json: bool
    def __init__(self, binary: _Optional[bytes] = ..., text: _Optional[str] = ..., is_text: bool = ..., coalesce_key: _Optional[str] = ..., has_coalesce_key: bool = ..., channels: _Optional[_Iterable[str]] = ..., channels_is_list: bool = ..., group: _Optional[str] = ..., text_is_json: bool = ...) -> None: ...
