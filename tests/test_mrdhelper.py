"""Tests for mrdhelper: header copy, userParameters, JSON config, MiniHeader, ROI/Text attrs."""

import base64
from types import SimpleNamespace

import ismrmrd
import ismrmrd.xsd
import pytest

import mrdhelper

HEADER_XML = """<?xml version="1.0" encoding="UTF-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <experimentalConditions>
    <H1resonanceFrequency_Hz>63500000</H1resonanceFrequency_Hz>
  </experimentalConditions>
  <encoding>
    <encodedSpace>
      <matrixSize><x>64</x><y>64</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>256</x><y>256</y><z>5</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>64</x><y>64</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>256</x><y>256</y><z>5</z></fieldOfView_mm>
    </reconSpace>
    <encodingLimits></encodingLimits>
    <trajectory>cartesian</trajectory>
  </encoding>
  {user_parameters}
</ismrmrdHeader>
"""

USER_PARAMETERS = """<userParameters>
    <userParameterLong><name>BitsStored</name><value>12</value></userParameterLong>
    <userParameterDouble><name>Gain</name><value>1.5</value></userParameterDouble>
    <userParameterString><name>Note</name><value>hello</value></userParameterString>
    <userParameterBase64><name>Blob</name><value>{b64}</value></userParameterBase64>
  </userParameters>""".format(b64=base64.b64encode('héllo wörld'.encode()).decode('ascii'))

MINIHEAD = """<XProtocol>
{
  <Name> "IceMiniHead"
  <ParamMap."">
  {
    <ParamLong."BIsSeriesEnd">  { 1  }
    <ParamLong."Count">  { <Default> 3 }
    <ParamLong."Twice">
    {
      1
      2
    }
    <ParamBool."IsPhase">  { "true"  }
    <ParamBool."IsMag">  { "false"  }
    <ParamDouble."TE">
    {
      <Precision> 6
      2.46
    }
    <ParamString."SequenceDescription">
    {
      <Visible> "true"
      "gre fl2d"
    }
    <ParamString."Empty">  { }
  }
}
"""


@pytest.fixture
def header():
    return ismrmrd.xsd.CreateFromDocument(HEADER_XML.replace('{user_parameters}', USER_PARAMETERS))


@pytest.fixture
def header_without_user_parameters():
    return ismrmrd.xsd.CreateFromDocument(HEADER_XML.replace('{user_parameters}', ''))


def test_header_xml_parses_with_user_parameters(header):
    assert header.experimentalConditions.H1resonanceFrequency_Hz == 63500000
    assert header.encoding[0].reconSpace.matrixSize.x == 64
    assert header.userParameters.userParameterLong[0].name == 'BitsStored'


def test_user_parameters_return_typed_values(header):
    assert mrdhelper.get_userParameterLong_value(header, 'BitsStored') == 12
    assert isinstance(mrdhelper.get_userParameterLong_value(header, 'BitsStored'), int)
    assert mrdhelper.get_userParameterDouble_value(header, 'Gain') == 1.5
    assert mrdhelper.get_userParameterString_value(header, 'Note') == 'hello'
    assert mrdhelper.get_userParameterBase64_value(header, 'Blob') == 'héllo wörld'


def test_user_parameter_with_unknown_name_is_none(header):
    assert mrdhelper.get_userParameterLong_value(header, 'Nope') is None
    assert mrdhelper.get_userParameterDouble_value(header, 'BitsStored') is None
    assert mrdhelper.get_userParameterString_value(header, 'Gain') is None
    assert mrdhelper.get_userParameterBase64_value(header, 'Note') is None


def test_absent_user_parameters_section_gives_none(header_without_user_parameters):
    assert header_without_user_parameters.userParameters is None
    for getter in (mrdhelper.get_userParameterLong_value, mrdhelper.get_userParameterDouble_value,
                   mrdhelper.get_userParameterString_value,
                   mrdhelper.get_userParameterBase64_value):
        assert getter(header_without_user_parameters, 'BitsStored') is None


def test_unparsed_xml_string_metadata_gives_none():
    raw_xml = HEADER_XML.replace('{user_parameters}', USER_PARAMETERS)
    assert mrdhelper.get_userParameterLong_value(raw_xml, 'BitsStored') is None
    assert mrdhelper.get_userParameterBase64_value(None, 'Blob') is None


def test_base64_parameter_given_as_text_is_decoded():
    param = SimpleNamespace(name='Blob', value=base64.b64encode(b'abc').decode('ascii'))
    metadata = SimpleNamespace(userParameters=SimpleNamespace(userParameterBase64=[param]))
    assert mrdhelper.get_userParameterBase64_value(metadata, 'Blob') == 'abc'


def test_update_img_header_copies_readout_fields():
    raw = ismrmrd.AcquisitionHeader()
    raw.version = 1
    raw.flags = 1 << 40
    raw.measurement_uid = 1234
    raw.position[:] = [1.0, 2.0, 3.0]
    raw.read_dir[:] = [1.0, 0.0, 0.0]
    raw.phase_dir[:] = [0.0, 1.0, 0.0]
    raw.slice_dir[:] = [0.0, 0.0, 1.0]
    raw.patient_table_position[:] = [0.0, 0.0, -50.0]
    raw.idx.average, raw.idx.slice, raw.idx.contrast = 2, 3, 4
    raw.idx.phase, raw.idx.repetition, raw.idx.set = 5, 6, 7
    raw.acquisition_time_stamp = 987654
    raw.physiology_time_stamp[:] = [11, 22, 33]
    raw.user_int[:] = list(range(8))
    raw.user_float[:] = [0.5 * i for i in range(8)]

    img = ismrmrd.ImageHeader()
    img.data_type = ismrmrd.DATATYPE_SHORT
    img.matrix_size[:] = [64, 32, 1]
    img.channels = 1
    img.field_of_view[:] = [256.0, 128.0, 5.0]
    img.image_series_index = 9

    result = mrdhelper.update_img_header_from_raw(img, raw)

    assert result is img
    assert (img.version, img.flags, img.measurement_uid) == (1, 1 << 40, 1234)
    assert list(img.position) == [1.0, 2.0, 3.0]
    assert list(img.read_dir) == [1.0, 0.0, 0.0]
    assert list(img.phase_dir) == [0.0, 1.0, 0.0]
    assert list(img.slice_dir) == [0.0, 0.0, 1.0]
    assert list(img.patient_table_position) == [0.0, 0.0, -50.0]
    assert (img.average, img.slice, img.contrast, img.phase, img.repetition, img.set) == \
        (2, 3, 4, 5, 6, 7)
    assert img.acquisition_time_stamp == 987654
    assert list(img.physiology_time_stamp) == [11, 22, 33]
    assert list(img.user_int) == list(range(8))
    assert list(img.user_float) == [0.5 * i for i in range(8)]
    assert (img.image_type, img.image_index, img.image_series_index) == (1, 1, 0)
    # untouched fields
    assert img.data_type == ismrmrd.DATATYPE_SHORT
    assert list(img.matrix_size) == [64, 32, 1]
    assert img.channels == 1
    assert list(img.field_of_view) == [256.0, 128.0, 5.0]


def test_update_img_header_copies_by_value():
    raw = ismrmrd.AcquisitionHeader()
    raw.position[:] = [1.0, 2.0, 3.0]
    img = mrdhelper.update_img_header_from_raw(ismrmrd.ImageHeader(), raw)
    raw.position[0] = 99.0
    assert list(img.position) == [1.0, 2.0, 3.0]


def test_update_img_header_without_raw_is_unchanged():
    img = ismrmrd.ImageHeader()
    img.image_series_index = 5
    assert mrdhelper.update_img_header_from_raw(img, None) is img
    assert (img.image_series_index, img.image_type) == (5, 0)


def test_get_meta_value():
    meta = ismrmrd.Meta({'DataRole': 'Image', 'ImageType': ['ORIGINAL', 'PRIMARY']})
    assert mrdhelper.get_meta_value(meta, 'DataRole') == 'Image'
    assert mrdhelper.get_meta_value(meta, 'ImageType') == ['ORIGINAL', 'PRIMARY']
    assert mrdhelper.get_meta_value(meta, 'Missing') is None
    assert mrdhelper.get_meta_value(None, 'DataRole') is None


CONFIG = {'version': '1.1.0', 'parameters': {
    'filterSize': '3', 'scale': '2.5', 'mode': 'fast', 'sendOriginal': 'False',
    'flag': True, 'yes': 'TRUE', 'maybe': 'perhaps'}}


@pytest.mark.parametrize('key, type_, expected', [
    ('filterSize', 'int', 3),
    ('scale', 'float', 2.5),
    ('scale', 'double', 2.5),
    ('mode', 'str', 'fast'),
    ('mode', 'string', 'fast'),
    ('mode', 'choice', 'fast'),
    ('filterSize', 'str', '3'),
    ('sendOriginal', 'bool', False),
    ('yes', 'boolean', True),
    ('flag', 'bool', True),
])
def test_json_config_param_converts_by_type(key, type_, expected):
    value = mrdhelper.get_json_config_param(CONFIG, key, default='dflt', type=type_)
    assert value == expected
    assert type(value) is type(expected)


def test_json_config_param_unrecognised_bool_raises():
    # python-ismrmrd-server returns the default here; a value that is no bool is an error now
    with pytest.raises(mrdhelper.ConfigError, match=r"parameters\.maybe must be a bool .*got str 'perhaps'"):
        mrdhelper.get_json_config_param(CONFIG, 'maybe', default=None, type='bool')


@pytest.mark.parametrize('config', [
    'invertcontrast', None, {'version': '1.1.0'}, {'parameters': None}, {'parameters': {}}])
def test_json_config_param_defaults_when_unavailable(config):
    assert mrdhelper.get_json_config_param(config, 'filterSize', default=7, type='int') == 7


def test_json_config_param_default_is_none_without_explicit_default():
    assert mrdhelper.get_json_config_param(CONFIG, 'missing') is None


def test_json_config_param_unknown_type_raises():
    with pytest.raises(ValueError, match='list'):
        mrdhelper.get_json_config_param(CONFIG, 'mode', type='list')


def test_minihead_values_are_parsed():
    assert mrdhelper.extract_minihead_long_param(MINIHEAD, 'BIsSeriesEnd') == 1
    assert mrdhelper.extract_minihead_bool_param(MINIHEAD, 'IsPhase') is True
    assert mrdhelper.extract_minihead_bool_param(MINIHEAD, 'IsMag') is False
    assert mrdhelper.extract_minihead_double_param(MINIHEAD, 'TE') == pytest.approx(2.46)
    assert mrdhelper.extract_minihead_string_param(MINIHEAD, 'SequenceDescription') == 'gre fl2d'


def test_minihead_missing_values_give_defaults():
    assert mrdhelper.extract_minihead_bool_param(MINIHEAD, 'Absent') is False
    assert mrdhelper.extract_minihead_long_param(MINIHEAD, 'Absent') == 0
    assert mrdhelper.extract_minihead_double_param(MINIHEAD, 'Absent') == 0.0
    assert mrdhelper.extract_minihead_string_param(MINIHEAD, 'Absent') is None
    assert mrdhelper.extract_minihead_string_param('', 'SequenceDescription') is None


def test_minihead_type_must_match():
    # BIsSeriesEnd is a ParamLong, not a ParamBool
    assert mrdhelper.extract_minihead_bool_param(MINIHEAD, 'BIsSeriesEnd') is False


def test_minihead_tag_only_empty_or_multiple_values_give_defaults():
    assert mrdhelper.extract_minihead_long_param(MINIHEAD, 'Count') == 0
    assert mrdhelper.extract_minihead_long_param(MINIHEAD, 'Twice') == 0
    assert mrdhelper.extract_minihead_string_param(MINIHEAD, 'Empty') is None


def test_create_roi_format():
    roi = mrdhelper.create_roi([1, 2, 3, 1], [4, 5, 6, 4], rgb=(0, 1, 0.5), thickness=2,
                               style=1, visibility=0)
    assert roi == ['0.000000', '1.000000', '0.500000', '2.000000', '1', '0',
                   '1.000000', '4.000000', '2.000000', '5.000000', '3.000000', '6.000000',
                   '1.000000', '4.000000']


def test_roi_round_trip():
    x, y = [10.5, 20.0, 20.0, 10.5], [5.0, 5.0, 15.25, 5.0]
    roi = mrdhelper.create_roi(x, y, rgb=(0.25, 0.5, 1), thickness=3, style=1, visibility=1)
    assert mrdhelper.parse_roi(roi) == (x, y, (0.25, 0.5, 1.0), 3.0, 1, 1)


def test_roi_defaults():
    assert mrdhelper.parse_roi(mrdhelper.create_roi([0], [1])) == \
        ([0.0], [1.0], (1.0, 0.0, 0.0), 1.0, 0, 1)


@pytest.mark.parametrize('roi', [[], ['1'] * 6, ['1'] * 7, ['1'] * 9])
def test_parse_roi_rejects_bad_length(roi):
    with pytest.raises(ValueError):
        mrdhelper.parse_roi(roi)


def test_create_roi_rejects_mismatched_coordinates():
    with pytest.raises(ValueError):
        mrdhelper.create_roi([1, 2], [1])


def test_create_text_format_and_round_trip():
    text = mrdhelper.create_text(12, 34.5, rgb=(0, 0, 1), visibility=0, string='TE = 2 ms')
    assert text == ['0.000000', '0.000000', '1.000000', '12.000000', '34.500000', '0',
                    'TE = 2 ms']
    assert mrdhelper.parse_text(text) == (12.0, 34.5, (0.0, 0.0, 1.0), 0, 'TE = 2 ms')


def test_text_defaults():
    assert mrdhelper.create_text(1, 2) == ['1.000000', '0.000000', '0.000000', '1.000000',
                                           '2.000000', '1', '']


@pytest.mark.parametrize('text', [['1'] * 6, ['1'] * 8])
def test_parse_text_rejects_wrong_length(text):
    with pytest.raises(ValueError):
        mrdhelper.parse_text(text)


def test_roi_and_text_survive_meta_serialisation():
    meta = ismrmrd.Meta()
    meta['ROI_box'] = mrdhelper.create_roi([1, 2, 2, 1], [1, 1, 2, 1])
    meta['Text_label'] = mrdhelper.create_text(3, 4, string='label')
    restored = ismrmrd.Meta.deserialize(meta.serialize())
    assert mrdhelper.parse_roi(restored['ROI_box'])[:2] == ([1.0, 2.0, 2.0, 1.0],
                                                           [1.0, 1.0, 2.0, 1.0])
    assert mrdhelper.parse_text(restored['Text_label'])[-1] == 'label'
