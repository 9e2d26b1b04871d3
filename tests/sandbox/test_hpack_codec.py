"""The sandbox's HPACK codec agrees with the hpack package in both directions."""

from __future__ import annotations

import pytest
from hpack import Decoder, Encoder
from hpack.exceptions import HPACKDecodingError
from hypothesis import given
from hypothesis import strategies as st

from workers.sandbox.hpack_codec import HeaderDecoder, HeaderEncoder, decode_huffman

header_names = st.binary(min_size=1, max_size=40).map(lambda name: name.lower())
header_lists = st.lists(st.tuples(header_names, st.binary(max_size=300)), max_size=12)


@given(st.lists(header_lists, min_size=1, max_size=5), st.booleans())
def test_decoder_matches_hpack_encoder(blocks: list[list[tuple[bytes, bytes]]], huffman: bool):
    encoder = Encoder()
    decoder = HeaderDecoder()

    for headers in blocks:
        encoded = encoder.encode(headers, huffman=huffman)

        assert decoder.decode(encoded) == headers


@given(st.lists(header_lists, min_size=1, max_size=5))
def test_encoder_output_decodes_with_hpack(blocks: list[list[tuple[bytes, bytes]]]):
    encoder = HeaderEncoder()
    decoder = Decoder()

    for headers in blocks:
        block = [(b":status", b"200"), *headers]

        assert decoder.decode(encoder.encode(block), raw=True) == block


def test_status_without_static_entry_encoded_as_literal():
    encoded = HeaderEncoder().encode([(b":status", b"429"), (b"retry-after", b"30")])

    assert Decoder().decode(encoded, raw=True) == [(b":status", b"429"), (b"retry-after", b"30")]


def test_invalid_huffman_padding_rejected():
    # More than 7 bits of EOS padding is an error in RFC 7541 section 5.2.
    with pytest.raises(HPACKDecodingError):
        decode_huffman(b"\xff\xff\xff\xff")


def test_out_of_range_index_rejected():
    with pytest.raises(HPACKDecodingError):
        HeaderDecoder().decode(b"\xff\x10")
