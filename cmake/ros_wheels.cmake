# ROS 2 from the PyPI wheels (no sourced setup script), shared by this package and test/tf2_msgs.
#
# aliked_ros_find_ros_wheels(): when AMENT_PREFIX_PATH is unset, the ament resources live in the Python prefix that
# holds ament_package; point AMENT_PREFIX_PATH and CMAKE_PREFIX_PATH there. A sourced ROS install sets both itself.
# aliked_ros_drop_missing_include_dirs(): the wheels export include directories of the container they were built in
# (/opt/python/...), which do not exist here and make the generate step fail; drop include directories that do not
# exist from every imported target (call after the find_package calls).
macro(aliked_ros_find_ros_wheels)
  if("$ENV{AMENT_PREFIX_PATH}" STREQUAL "")
    execute_process(
      COMMAND "${Python3_EXECUTABLE}" -c
        "import ament_package, pathlib; print(pathlib.Path(ament_package.__file__).resolve().parents[4])"
      OUTPUT_VARIABLE _ros_wheels_prefix OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _ros_wheels_rc)
    if(NOT _ros_wheels_rc EQUAL 0)
      message(FATAL_ERROR "AMENT_PREFIX_PATH is not set and ament_package is not importable by ${Python3_EXECUTABLE}: "
        "source a ROS 2 install, or pip install the ros-kilted-* build wheels (see README).")
    endif()
    message(STATUS "${PROJECT_NAME}: using ROS 2 wheels under ${_ros_wheels_prefix}")
    set(ENV{AMENT_PREFIX_PATH} "${_ros_wheels_prefix}")
    list(APPEND CMAKE_PREFIX_PATH "${_ros_wheels_prefix}")
  endif()
endmacro()

macro(aliked_ros_drop_missing_include_dirs)
  get_directory_property(_imported_targets IMPORTED_TARGETS)
  foreach(_target IN LISTS _imported_targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(_dirs)
      set(_kept "")
      foreach(_dir IN LISTS _dirs)
        if(EXISTS "${_dir}" OR _dir MATCHES "^\\$<")
          list(APPEND _kept "${_dir}")
        endif()
      endforeach()
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
    endif()
  endforeach()
endmacro()

# rosidl_generator_py exports the Python and NumPy include directories of the build interpreter. When that
# interpreter is a venv inside the source tree (.venv/), CMake refuses to export source-tree paths: keep them for
# this build only. No package links against the Python extension library.
macro(aliked_ros_keep_python_includes_private)
  set(_py_target ${PROJECT_NAME}__rosidl_generator_py)
  get_target_property(_py_dirs ${_py_target} INTERFACE_INCLUDE_DIRECTORIES)
  if(_py_dirs)
    list(TRANSFORM _py_dirs REPLACE "^(/.*)$" "$<BUILD_INTERFACE:\\1>")
    set_target_properties(${_py_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_py_dirs}")
  endif()
endmacro()
