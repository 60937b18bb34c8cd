# `cmake --install build --prefix P`: the area libraries, public headers, the kd CLI and the CMake
# package (P/lib/<arch>/cmake/kd: find_package(kd) with targets kd::kd and kd::<area>).
# `make package`: the same as a .deb (CPack) that declares the Debian packages it needs.
include(CMakePackageConfigHelpers)

install(TARGETS kd ${KD_AREA_TARGETS} EXPORT kdTargets ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS kd_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/kd DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_BINARY_DIR}/include/kd/core/version.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kd/core)
install(EXPORT kdTargets NAMESPACE kd:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kd)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kdConfig.cmake.in ${PROJECT_BINARY_DIR}/kdConfig.cmake
                              INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kd
                              PATH_VARS CMAKE_INSTALL_BINDIR)
write_basic_package_version_file(${PROJECT_BINARY_DIR}/kdConfigVersion.cmake COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/kdConfig.cmake ${PROJECT_BINARY_DIR}/kdConfigVersion.cmake
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/kd)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME kd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "knowledge distillation in C++ on LibTorch: the kd CLI, its libraries and CMake package")
set(CPACK_PACKAGE_CONTACT "kd developers")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
# The kd binary's shared libraries are found by dpkg-shlibdeps; linking the static libraries
# needs the development packages they were built against.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(KD_DEB_DEPENDS libtorch-dev libopencv-dev libpugixml-dev nlohmann-json3-dev libyaml-cpp-dev
    libspdlog-dev libfmt-dev zlib1g-dev libgloo-dev libopenblas0-pthread)
if(KD_WITH_SERVE)
  list(APPEND KD_DEB_DEPENDS libsimdjson-dev)
endif()
if(KD_WITH_GRPC)
  list(APPEND KD_DEB_DEPENDS libgrpc++-dev libprotobuf-dev)
endif()
if(KD_WITH_ONNX)
  list(APPEND KD_DEB_DEPENDS libonnx-dev)
endif()
list(JOIN KD_DEB_DEPENDS ", " CPACK_DEBIAN_PACKAGE_DEPENDS)
include(CPack)
